"""How events become tensors: object count, cache, split and augmentations."""

import re

from pydantic import Field, PositiveInt, field_validator, model_validator

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
    chunk_size: str = Field("100 MB", description="uproot.iterate step size: bounded memory per chunk "
                            "(the reader holds two: one is read ahead)")
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: int = 0
    augment: AugmentConfig = AugmentConfig()

    @field_validator("chunk_size")
    @classmethod
    def _readable_chunk_size(cls, value: str) -> str:
        parse_chunk_size(value)
        return value

    @model_validator(mode="after")
    def _fractions_leave_training_data(self):
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ValueError("validation_fraction + test_fraction must be below 1")
        return self


_MEMORY_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?b|b)\s*$", re.IGNORECASE)
_BYTES = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_chunk_size(value: str | int) -> str | int:
    """A read step for uproot.iterate: a number of entries (int) or a memory size ('100 MB', kept as text).

    ValueError 'must be ≥ 1: ...' for zero, negative or unreadable values.
    """
    text = str(value).strip()
    if text.isdigit() and int(text) >= 1:
        return int(text)
    size = _MEMORY_SIZE.match(text)
    if size and float(size.group(1)) * _BYTES[size.group(2).lower()] >= 1:
        return text
    raise ValueError(f"must be ≥ 1: a number of entries or a memory size such as '100 MB', got {str(value)!r}")
