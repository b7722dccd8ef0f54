"""How events become tensors: object count, cache, split and augmentations."""

from pydantic import Field, PositiveInt, model_validator

from crossfed.config.base import Section


class AugmentConfig(Section):
    """Physics symmetries used as augmentations (KEK study): all on by default for pre-training."""

    phi_rotation: bool = True
    z_flip: bool = True
    boost: bool = True
    max_rapidity_shift: float = Field(0.5, ge=0.0, description="longitudinal boost: uniform rapidity shift in ±this")


class DataConfig(Section):
    max_objects: PositiveInt = Field(16, description="objects kept per event (MET, leptons, then jets by pT)")
    cache_dir: str = Field(".crossfed/cache", description="tensor cache keyed by file content, schema, selection")
    chunk_size: str = Field("100 MB", description="uproot.iterate step size: bounded memory per chunk")
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: int = 0
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _fractions_leave_training_data(self):
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ValueError("validation_fraction + test_fraction must be below 1")
        return self
