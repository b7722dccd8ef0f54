"""The sweep file and its validation: everything that can be checked before a single trial starts.

Owns: the sweep file's schema (`SweepSpec`), loading it with its base run configuration (`Sweep`), and
checking every hyperparameter key against the run configuration, every candidate value of the search
space, the metric against what every round reports, and the search algorithm's needs. No Ray here:
`crossfed sweep --check` uses only this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt, ValidationError

from crossfed import extras
from crossfed.config import (
    RunConfig, apply_overrides, config_from_dict, describe_validation_error, load_config, read_yaml, walk_keys,
)
from crossfed.config.base import Section
from crossfed.errors import CrossfedError, did_you_mean

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")


class AshaConfig(Section):
    enabled: bool = True
    grace_period: PositiveInt = Field(1, description="rounds every trial runs before it may be stopped")
    reduction_factor: float = Field(2.0, gt=1.0)


class SweepSpec(Section):
    name: str | None = Field(None, description="defaults to the sweep file's stem")
    base: str = Field(description="run configuration every trial starts from (path relative to the sweep file)")
    metric: str = Field("global/val_loss", description="a global metric every round reports")
    mode: Literal["min", "max"] = "min"
    algorithm: Literal["random", "grid", "optuna"] = "random"
    num_samples: PositiveInt | None = Field(
        None, description="trials (random, optuna; default 8); repetitions of the whole grid (grid; default 1)"
    )
    max_concurrent: PositiveInt | None = Field(None, description="None: as many as the cluster's resources allow")
    asha: AshaConfig = AshaConfig()
    overrides: dict[str, Any] = Field(default_factory=dict, description="fixed settings applied to every trial")
    space: dict[str, Any] = Field(min_length=1)


class Sweep:
    """A loaded, validated sweep: spec, the fully resolved base config, and the search space."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        raw = read_yaml(self.path)
        if not isinstance(raw, dict):
            raise CrossfedError(f"{self.path}: a sweep file must be a mapping")
        try:
            self.spec = SweepSpec.model_validate(raw)
        except ValidationError as err:
            raise CrossfedError(describe_validation_error(err, str(self.path), SweepSpec)) from None
        self.name = self.spec.name or self.path.stem
        base_path = self.path.parent / self.spec.base
        base = load_config(base_path, self.spec.overrides or None)
        # The resolved base (absolute data paths) so that a written-out best config runs from anywhere.
        self.base_raw = base.model_dump(mode="json", by_alias=True)
        self.base = base
        self._validate_space()

    def _validate_space(self) -> None:
        for key, dimension in self.spec.space.items():
            check_config_key(key, self.base, source=f"{self.path}: space")
            for value in candidate_values(key, dimension, source=str(self.path)):
                try:
                    config_from_dict(apply_overrides(self.base_raw, {key: value}), source=f"{self.path}: space.{key}")
                except CrossfedError as err:
                    raise CrossfedError(f"{self.path}: space.{key} = {value!r} is not a valid setting: {err}") from None
        from crossfed.federation.rounds import round_metric_names

        reported = round_metric_names(self.base)
        if self.spec.metric not in reported:
            raise CrossfedError(
                f"{self.path}: metric {self.spec.metric!r} is not reported by any trial"
                f"{did_you_mean(self.spec.metric, reported)}; "
                f"every round reports: {', '.join(reported)}"
            )
        if self.spec.algorithm == "optuna":
            try:
                extras.optuna()
            except CrossfedError as err:
                raise CrossfedError(f"{self.path}: {err}") from None
            if any(distribution(d) == "grid" for d in self.spec.space.values()):
                raise CrossfedError(f"{self.path}: 'grid' dimensions need algorithm 'grid' or 'random', not 'optuna'")


def distribution(dimension: Any) -> str | None:
    """The distribution a search-space dimension names (`{loguniform: [1e-3, 1]}`), None for a constant."""
    if isinstance(dimension, dict) and len(dimension) == 1 and next(iter(dimension)) in DISTRIBUTIONS:
        return next(iter(dimension))
    return None


def distribution_args(dimension: dict) -> Any:
    return next(iter(dimension.values()))


def candidate_values(key: str, dimension: Any, source: str) -> list[Any]:
    """The values a dimension can take that are worth checking: every choice, or a range's ends."""
    kind = distribution(dimension)
    if isinstance(dimension, dict) and kind is None:
        raise CrossfedError(
            f"{source}: space.{key}: a dimension is a constant or one of "
            f"{', '.join('{' + d + ': ...}' for d in DISTRIBUTIONS)}; got keys {sorted(dimension)}"
        )
    if kind is None:
        return [dimension]
    args = distribution_args(dimension)
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise CrossfedError(f"{source}: space.{key}: {kind} needs a non-empty list of values")
        return args
    if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args)):
        raise CrossfedError(f"{source}: space.{key}: {kind} needs [low, high]")
    low, high = args
    if not low < high:
        raise CrossfedError(f"{source}: space.{key}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise CrossfedError(f"{source}: space.{key}: loguniform needs a positive low end")
    if kind == "randint":
        return [int(low), int(high) - 1]
    return [low, high]


def check_config_key(dotted: str, config: RunConfig, source: str) -> None:
    """Raise if `dotted` does not name a setting of the run configuration."""
    parts = dotted.split(".")
    for index, step in enumerate(walk_keys(type(config), parts)):
        walked = ".".join(parts[:index])
        if step.kind == "unknown":
            hint = did_you_mean(step.key, step.valid_keys(), within=f"{walked}." if walked else "")
            raise CrossfedError(f"{source}: unknown hyperparameter {dotted!r}{hint}")
        if step.kind == "value":
            raise CrossfedError(f"{source}: unknown hyperparameter {dotted!r}: {walked} is a value, not a section")
        if walked == "experiments" and step.key not in config.experiments:
            raise CrossfedError(
                f"{source}: unknown hyperparameter {dotted!r}: no experiment {step.key!r} in the base config "
                f"(it has {', '.join(config.experiments)})"
            )
