"""Which transformer: a preset, optionally with its sizes overridden."""

from typing import Literal

from pydantic import Field, PositiveInt

from crossfed.config.base import Section

Preset = Literal["tiny", "kishimoto-11m", "large"]


class ModelConfig(Section):
    preset: Preset = "tiny"
    dim: PositiveInt | None = Field(None, description="token width; None keeps the preset's")
    depth: PositiveInt | None = None
    heads: PositiveInt | None = None
    mlp_ratio: float | None = Field(None, gt=0)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
