"""The study configuration (`crossfed study CONFIG`): which experiments, which downstream tasks, which
scenarios, how many repeats, and the pre-training and fine-tuning settings every method shares.

Everything that can be wrong with it is found here, before any event is generated or model trained: an
unknown key or process, a ladder point larger than the training split, a scenario ratio ≤ 0, a scaling
point larger than the pool. Built-in configs (`presets/*.yaml`) are found by name: `crossfed study study`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError, field_validator, model_validator

from crossfed.config import (
    ClusterConfig, DataConfig, DatasetConfig, FederationConfig, FinetuneConfig, ModelConfig, TrackingConfig,
    TrainingConfig, describe_validation_error, read_yaml,
)
from crossfed.config.base import Section
from crossfed.errors import CrossfedError, did_you_mean

PRESETS_DIR = Path(__file__).parent / "presets"
METHODS = ("federated", "local", "centralized", "scratch")
# The built-in detectors and the schema of the files the generator writes for each.
DETECTOR_SCHEMAS = {"cms": "cms_nanoaod", "atlas": "atlas_opendata"}


class StudyExperiment(Section):
    """One experiment: a built-in detector whose events are generated, and/or datasets that exist."""

    detector: Literal["cms", "atlas"] | None = Field(None, description="generate this experiment's events")
    data_schema: str | None = Field(None, alias="schema", description="default: the detector's own format")
    pretrain: DatasetConfig | None = Field(None, description="unlabelled events; default: generated")
    labelled: dict[str, DatasetConfig] = Field(default_factory=dict,
                                               description="process name -> its events; missing ones are generated")
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _data_from_somewhere(self):
        if self.detector is None and self.data_schema is None:
            raise ValueError("give a detector (events are generated) or a schema with datasets")
        if self.detector is None and self.pretrain is None:
            raise ValueError("no pretrain dataset and no detector to generate one")
        return self

    @property
    def schema(self) -> str:
        return self.data_schema or DETECTOR_SCHEMAS[self.detector]


class Generation(Section):
    """What the built-in generator makes for each experiment with a detector (reused on rerun)."""

    labelled_events: PositiveInt = Field(1000, description="events per labelled process, after preselection")
    pretrain_events: PositiveInt | None = Field(
        None, description="unlabelled pool per experiment; default: the largest scenario size (smaller sizes are "
                          "the pool's first events)")
    mixture: list[str] = Field(default_factory=lambda: ["ttbar", "single_top"], min_length=1,
                               description="SM processes of the unlabelled pool, by cross-section × efficiency")
    pilot_events: PositiveInt = Field(300, description="generated per mixture process to measure its share")
    workers: PositiveInt | None = Field(None, description="generator processes; default: all cores")


class Task(Section):
    signal: str
    background: str


class Labelled(Section):
    """How each task's labelled events are split; the test split is shared by every method and seed."""

    validation_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    split_seed: int = 0

    @model_validator(mode="after")
    def _training_left(self):
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ValueError("validation_fraction + test_fraction must be below 1")
        return self


class Symmetric(Section):
    events: PositiveInt = Field(description="pre-training events per experiment")


class DataPoor(Section):
    events: PositiveInt = Field(description="pre-training events of every other experiment")
    poor: str = Field(description="the experiment with fewer events")
    ratio: PositiveFloat = Field(10.0, description="the poor experiment has events / ratio")

    @property
    def poor_events(self) -> int:
        return max(1, round(self.events / self.ratio))


class Scaling(Section):
    events: list[PositiveInt] = Field(min_length=2, description="pre-training events per experiment, each point")
    labelled_events: list[PositiveInt] = Field(min_length=1, description="ladder points the curve is drawn at")

    @field_validator("events")
    @classmethod
    def _sorted(cls, events: list[int]) -> list[int]:
        return sorted(set(events))


class Scenarios(Section):
    symmetric: Symmetric | None = None
    data_poor: DataPoor | None = None
    scaling: Scaling | None = None


class Repeats(Section):
    pretrain_seeds: PositiveInt = Field(3, description="R: independent pre-trainings per method and scenario")
    finetune_seeds: PositiveInt = Field(5, description="F: fine-tunings per pre-trained model and ladder point, "
                                                       "each with its own labelled subset")


class Compute(Section):
    concurrent_runs: PositiveInt = Field(2, description="pre-training runs at a time")
    finetune_cpus: PositiveFloat = Field(1.0, description="CPUs per fine-tuning task (Ray)")
    finetune_gpus: float = Field(0.0, ge=0.0, description="GPUs per fine-tuning task (Ray)")


class StudyConfig(Section):
    name: str = "study"
    seed: NonNegativeInt = Field(0, description="generation seeds and the pre-training seeds seed, seed+1, ... derive from it")
    experiments: dict[str, StudyExperiment] = Field(
        default_factory=lambda: {"cms": StudyExperiment(detector="cms"), "atlas": StudyExperiment(detector="atlas")},
        min_length=2)
    processes: dict[str, list[str]] = Field(default_factory=dict,
                                            description="new processes from raw Pythia settings (beams are added)")
    tasks: dict[str, Task] = Field(default_factory=lambda: {"tth_vs_ttbar": Task(signal="tth", background="ttbar")},
                                   min_length=1)
    generation: Generation = Generation()
    labelled: Labelled = Labelled()
    scenarios: Scenarios
    methods: list[Literal["federated", "local", "centralized", "scratch"]] = Field(
        default_factory=lambda: list(METHODS), min_length=1)
    repeats: Repeats = Repeats()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig(test_fraction=0.0)  # the pre-training split: no test part needed
    training: TrainingConfig = TrainingConfig()
    federation: FederationConfig = FederationConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    tracking: TrackingConfig = TrackingConfig(experiment="crossfed-study")
    compute: Compute = Compute()

    @field_validator("training")
    @classmethod
    def _steps_are_the_studys(cls, training: TrainingConfig) -> TrainingConfig:
        if "steps" in training.model_fields_set:
            raise ValueError("steps is set by the study: federation.rounds × federation.local_steps per "
                             "experiment for every method (equal budgets); remove it")
        return training

    # -- checks that need several sections ----------------------------------------------------------------
    def problems(self) -> list[str]:
        from crossfed.generate.processes import PROCESSES

        found = []
        known = {**PROCESSES, **self.processes}
        for name, task in self.tasks.items():
            for role in ("signal", "background"):
                process = getattr(task, role)
                if process not in known:
                    found.append(f"tasks.{name}.{role}: unknown process {process!r}{did_you_mean(process, known)}; "
                                 f"known: {', '.join(sorted(known))} (or declare it under processes:)")
        for process in self.generation.mixture:  # the recipe's mixture takes catalogue processes only
            if process not in PROCESSES:
                found.append(f"generation.mixture: unknown process {process!r}{did_you_mean(process, PROCESSES)}; "
                             f"known: {', '.join(sorted(PROCESSES))}")
        for name, experiment in self.experiments.items():
            if experiment.detector is None:
                missing = [p for p in self.labelled_processes() if p not in experiment.labelled]
                if missing:
                    found.append(f"experiments.{name}.labelled: no dataset for process(es) {', '.join(missing)} "
                                 "and no detector to generate them")
        scenarios = self.scenarios
        if not (scenarios.symmetric or scenarios.data_poor or scenarios.scaling):
            found.append("scenarios: name at least one of symmetric, data_poor, scaling")
        if scenarios.data_poor and scenarios.data_poor.poor not in self.experiments:
            found.append(f"scenarios.data_poor.poor: {scenarios.data_poor.poor!r} is not an experiment "
                         f"({', '.join(self.experiments)})")
        if scenarios.scaling:
            outside = [n for n in scenarios.scaling.labelled_events if n not in self.finetune.labelled_events]
            if outside:
                found.append(f"scenarios.scaling.labelled_events: {outside} are not in finetune.labelled_events "
                             f"{self.finetune.labelled_events}")
            unknown = [m for m in ("federated", "local") if m not in self.methods]
            if unknown:
                found.append(f"scenarios.scaling compares federated with local pre-training: add {unknown} to methods")
        largest = max(self.pretrain_sizes(), default=0)
        if self.generation.pretrain_events is not None and self.generation.pretrain_events < largest:
            found.append(f"generation.pretrain_events: {self.generation.pretrain_events} events, the scenarios "
                         f"need {largest}")
        smallest = min(self.pretrain_sizes(), default=None)
        if smallest is not None and int(smallest * self.data.validation_fraction) < 1:
            found.append(f"scenarios: {smallest} pre-training events leave no validation event at "
                         f"data.validation_fraction {self.data.validation_fraction}")
        found += self._ladder_problems()
        return found

    def _ladder_problems(self) -> list[str]:
        """A ladder point must fit the training split of generated labelled events (half of it per class)."""
        if not any(e.detector for e in self.experiments.values()):
            return []  # given datasets only: checked once they are read, before any training
        fraction = 1.0 - self.labelled.validation_fraction - self.labelled.test_fraction
        per_class = self.generation.labelled_events * fraction
        largest = max(self.finetune.labelled_events)
        if (largest - largest // 2) <= 0.9 * per_class:  # 10 % margin: the split is random
            return []
        return [f"finetune.labelled_events: {largest} labelled events need {largest - largest // 2} per class, "
                f"the training split holds about {per_class:.0f} per class (generation.labelled_events "
                f"{self.generation.labelled_events} × training fraction {fraction:.2f}); lower the ladder or raise "
                f"generation.labelled_events"]

    # -- what the study derives -----------------------------------------------------------------------------
    def pretrain_sizes(self) -> list[int]:
        """Every pre-training event count a scenario asks of some experiment."""
        scenarios, sizes = self.scenarios, set()
        if scenarios.symmetric:
            sizes.add(scenarios.symmetric.events)
        if scenarios.data_poor:
            sizes |= {scenarios.data_poor.events, scenarios.data_poor.poor_events}
        if scenarios.scaling:
            sizes |= set(scenarios.scaling.events)
        return sorted(sizes)

    def pool_events(self) -> int:
        """Unlabelled events to generate per experiment (default the largest size); smaller sizes are its
        first events."""
        return self.generation.pretrain_events or max(self.pretrain_sizes())

    def labelled_processes(self) -> list[str]:
        """Every process some task needs, each once (a background shared by tasks is one sample)."""
        return list(dict.fromkeys(p for task in self.tasks.values() for p in (task.signal, task.background)))

    def pretrain_seeds(self) -> list[int]:
        return [self.seed + r for r in range(self.repeats.pretrain_seeds)]

    def finetune_seed(self, pretrain_seed: int, index: int) -> int:
        """The fine-tuning seed of run `index` on the model of `pretrain_seed`: every run its own subset."""
        return 100_003 * (pretrain_seed + 1) + index

    def steps_per_experiment(self) -> int:
        return self.federation.rounds * self.federation.local_steps


def study_from_dict(raw, source: str) -> StudyConfig:
    if not isinstance(raw, dict):
        raise CrossfedError(f"{source}: a study configuration is a mapping of sections, got {type(raw).__name__}")
    try:
        study = StudyConfig.model_validate(raw)
    except ValidationError as err:
        raise CrossfedError(describe_validation_error(err, source)) from None
    problems = [f"{source}: {problem}" for problem in study.problems()]
    if problems:
        raise CrossfedError(problems[0] if len(problems) == 1 else f"{len(problems)} problems\n  " + "\n  ".join(problems))
    _check_pythia_settings(study, source)
    return study


def _check_pythia_settings(study: StudyConfig, source: str) -> None:
    """Raw Pythia settings of the study's own processes are tried now, not when their turn to generate comes."""
    generated = [name for name in study.processes if name in study.labelled_processes() + study.generation.mixture]
    if not generated or not any(e.detector for e in study.experiments.values()):
        return
    from crossfed.generate.processes import pythia_settings
    from crossfed.generate.pythia import check_settings

    for name in generated:
        try:
            check_settings(pythia_settings("custom", tuple(study.processes[name])))
        except CrossfedError as err:
            raise CrossfedError(f"{source}: processes.{name}: {err}") from None


def preset_names() -> list[str]:
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def load_study(config: str | Path) -> StudyConfig:
    """A study config from a YAML file, or a built-in one by name (ci, demo, study, large). Data paths in a
    file are taken relative to it."""
    path = Path(config)
    if not path.is_file() and (PRESETS_DIR / f"{config}.yaml").is_file():
        path = PRESETS_DIR / f"{config}.yaml"
    elif not path.is_file():
        raise CrossfedError(f"{config}: no such study config file or built-in study "
                            f"({', '.join(preset_names())}){did_you_mean(str(config), preset_names())}")
    study = study_from_dict(read_yaml(path), str(path))
    base = path.resolve().parent
    for experiment in study.experiments.values():
        if experiment.data_schema and experiment.data_schema.endswith((".yaml", ".yml")):
            experiment.data_schema = _relative_to(experiment.data_schema, base)
        for dataset in [experiment.pretrain, *experiment.labelled.values()]:
            if dataset is not None:
                dataset.files = [_relative_to(f, base) for f in dataset.files]
    return study


def _relative_to(entry: str, base: Path) -> str:
    return entry if "://" in entry or Path(entry).is_absolute() else str(base / entry)
