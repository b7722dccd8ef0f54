"""One configuration model for a whole run, loaded from YAML.

Each section lives in its own module beside this one; `RunConfig` binds them. Unknown keys, wrong
types and impossible values are rejected with the key path and the file named.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from crossfed.config.base import Section
from crossfed.config.checkpoint import CheckpointConfig
from crossfed.config.data import AugmentConfig, DataConfig
from crossfed.config.experiments import ClusterConfig, DatasetConfig, ExperimentConfig, LabelledConfig
from crossfed.config.federation import FederationConfig, PrivacyConfig, StrategyConfig
from crossfed.config.finetune import FinetuneConfig
from crossfed.config.keys import describe_validation_error, walk_keys
from crossfed.config.model import ModelConfig
from crossfed.config.tracking import TrackingConfig
from crossfed.config.training import TrainingConfig
from crossfed.errors import CrossfedError

__all__ = [
    "AugmentConfig", "CheckpointConfig", "ClusterConfig", "DataConfig", "DatasetConfig", "ExperimentConfig", "FederationConfig",
    "FinetuneConfig", "LabelledConfig", "ModelConfig", "PrivacyConfig", "RunConfig", "StrategyConfig",
    "TrackingConfig", "TrainingConfig", "load_config", "config_from_dict", "apply_overrides",
    "describe_validation_error", "walk_keys", "read_yaml",
]


class RunConfig(Section):
    name: str = "crossfed"
    seed: int = 0
    output_dir: str = Field(
        "runs", description="run storage: checkpoints, round records and exported models, below a local folder or "
                            "an fsspec URI such as s3://bucket/runs (the CROSSFED_STORAGE variable overrides it)")
    experiments: dict[str, ExperimentConfig] = Field(min_length=1)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    federation: FederationConfig = FederationConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    tracking: TrackingConfig = TrackingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()

    @model_validator(mode="after")
    def _enough_clients(self):
        if self.federation.min_clients > len(self.experiments):
            raise ValueError(
                f"federation.min_clients is {self.federation.min_clients} but only "
                f"{len(self.experiments)} experiment(s) are configured"
            )
        return self

    @model_validator(mode="after")
    def _privacy_commits_every_round(self):
        if self.federation.privacy.enabled and self.checkpoint.every != 1:
            # rounds run again after a resume would release a second, differently noised model of each
            raise ValueError(f"checkpoint.every is {self.checkpoint.every}: with federation.privacy.enabled every "
                             "round is committed (checkpoint.every: 1)")
        if self.federation.privacy.enabled and self.checkpoint.background:
            # a round committed in the background is broadcast before it counts: the same second release
            raise ValueError("checkpoint.background is true: with federation.privacy.enabled each round is committed "
                             "before the next starts (checkpoint.background: false)")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", by_alias=True), sort_keys=False)


def config_from_dict(raw: Any, source: str = "<config>") -> RunConfig:
    if not isinstance(raw, dict):
        raise CrossfedError(f"{source}: the configuration must be a mapping of sections, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise CrossfedError(describe_validation_error(err, source, RunConfig)) from None


def apply_overrides(raw: dict, overrides: list[str] | dict[str, Any]) -> dict:
    """Set dotted keys (``federation.rounds=3`` or ``{"federation.rounds": 3}``) on a raw config mapping."""
    raw = copy.deepcopy(raw)
    items = overrides.items() if isinstance(overrides, dict) else (_split_override(o) for o in overrides)
    for dotted, value in items:
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise CrossfedError(f"override {dotted}: {key} is not a section")
            node = child
        node[leaf] = value
    return raw


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise CrossfedError(f"override {text!r}: expected KEY=VALUE, e.g. federation.rounds=3")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CrossfedError(f"{path}: no such file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise CrossfedError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None


def load_config(path: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> RunConfig:
    """Read a run configuration from YAML; relative data paths are taken relative to the file."""
    raw = read_yaml(path)
    if overrides:
        raw = apply_overrides(raw or {}, overrides)
    config = config_from_dict(raw, source=str(path))
    _resolve_paths(config, Path(path).resolve().parent)
    return config


def _resolve(entry: str, base: Path) -> str:
    if "://" in entry or Path(entry).is_absolute():
        return entry
    return str(base / entry)


def _resolve_paths(config: RunConfig, base: Path) -> None:
    """Make data paths in a config file relative to that file, so a config works from any directory."""
    for experiment in config.experiments.values():
        if experiment.data_schema.endswith((".yaml", ".yml")):
            experiment.data_schema = _resolve(experiment.data_schema, base)
        datasets = [experiment.pretrain]
        if experiment.finetune:
            datasets += [experiment.finetune.signal, experiment.finetune.background]
        for dataset in filter(None, datasets):
            dataset.files = [_resolve(f, base) for f in dataset.files]
