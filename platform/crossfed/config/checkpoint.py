"""How many committed rounds a run keeps in its storage (`output_dir` / CROSSFED_STORAGE)."""

from pydantic import Field, PositiveInt

from crossfed.config.base import Section


class CheckpointConfig(Section):
    keep: PositiveInt = Field(
        2, description="committed rounds kept; a damaged newest round is skipped on --resume for an older one"
    )
