"""Which transformer: a preset, optionally with its sizes overridden."""

from typing import Literal

from pydantic import Field, PositiveInt

from crossfed.config.base import Section
from crossfed.errors import CrossfedError

Preset = Literal["tiny", "kishimoto-11m", "large"]

# Sizes per preset. tiny: seconds on a CPU; kishimoto-11m: the KEK study's ~11M parameters, kept wide and
# shallow so GPU matmuls are efficient; large: >= 100M for scaling studies.
PRESETS: dict[str, dict] = {
    "tiny": dict(dim=48, depth=2, heads=4, mlp_ratio=2.0, dropout=0.0),
    "kishimoto-11m": dict(dim=384, depth=6, heads=6, mlp_ratio=4.0, dropout=0.1),
    "large": dict(dim=1024, depth=8, heads=16, mlp_ratio=4.0, dropout=0.1),
}


class ModelConfig(Section):
    preset: Preset = "tiny"
    dim: PositiveInt | None = Field(None, description="token width; None keeps the preset's")
    depth: PositiveInt | None = None
    heads: PositiveInt | None = None
    mlp_ratio: float | None = Field(None, gt=0)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)


def model_sizes(cfg: ModelConfig) -> dict:
    """The preset's sizes with the config's overrides applied on top."""
    sizes = dict(PRESETS[cfg.preset])
    overrides = {"dim": cfg.dim, "depth": cfg.depth, "heads": cfg.heads, "mlp_ratio": cfg.mlp_ratio,
                 "dropout": cfg.dropout}
    sizes.update({key: value for key, value in overrides.items() if value is not None})
    if sizes["dim"] % sizes["heads"]:
        raise CrossfedError(f"model.dim ({sizes['dim']}) must be divisible by model.heads ({sizes['heads']})")
    return sizes
