"""What a study trains: the scenarios it answers, and the pre-trainings (setups) that answer them.

A *setup* is one pre-training: a method, the number of pre-training events of each experiment it trains
on, and a seed. Scenarios are sets of per-experiment event counts (symmetric; one experiment poorer; the
scaling points), and a setup serves every scenario it matches, so a local pre-training of CMS on 20,000
events is trained once for the symmetric scenario, the data-poor scenario's rich side and the scaling
curve's top point.

Equal budgets: every client trains `federation.rounds × federation.local_steps` steps of the same batch
size on its experiment's events; the centralized run takes the sum of the clients' steps and alternates
the experiments batch by batch, so each experiment's events are processed as often as in a federation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from crossfed.study.config import StudyConfig

PRETRAINED = ("federated", "local", "centralized")


@dataclass(frozen=True)
class Scenario:
    name: str  # "symmetric", "data_poor", "scaling/1000"
    kind: str  # "symmetric", "data_poor" or "scaling"
    events: tuple[tuple[str, int], ...]  # (experiment, pre-training events)
    methods: tuple[str, ...]
    ladder: tuple[int, ...]  # labelled-event counts shown

    def events_of(self, experiment: str) -> int:
        return dict(self.events)[experiment]

    def describe(self) -> str:
        return ", ".join(f"{e} {n:,}" for e, n in self.events) + " pre-training events"


@dataclass(frozen=True)
class Setup:
    method: str
    events: tuple[tuple[str, int], ...]  # the experiments it trains on and their events; () for scratch
    seed: int

    @property
    def experiments(self) -> list[str]:
        return [e for e, _ in self.events]

    def key(self) -> str:
        """A stable name, e.g. "federated/cms=20000,atlas=2000/seed=1"; the MLflow runs carry it."""
        return f"{self.method}/{','.join(f'{e}={n}' for e, n in self.events) or 'none'}/seed={self.seed}"

    def tags(self) -> dict[str, str]:
        return {"crossfed.setup": self.key(), "crossfed.method": self.method, "crossfed.seed": str(self.seed),
                "crossfed.pretrain_events": json.dumps(dict(self.events))}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "Setup":
        return cls(tags["crossfed.method"], tuple(json.loads(tags["crossfed.pretrain_events"]).items()),
                   int(tags["crossfed.seed"]))


def scenarios(study: StudyConfig) -> list[Scenario]:
    experiments = list(study.experiments)
    methods = tuple(study.methods)
    ladder = tuple(study.finetune.labelled_events)
    found = []
    if study.scenarios.symmetric:
        n = study.scenarios.symmetric.events
        found.append(Scenario("symmetric", "symmetric", tuple((e, n) for e in experiments), methods, ladder))
    if study.scenarios.data_poor:
        poor = study.scenarios.data_poor
        events = tuple((e, poor.poor_events if e == poor.poor else poor.events) for e in experiments)
        found.append(Scenario("data_poor", "data_poor", events, methods, ladder))
    if study.scenarios.scaling:
        scaling = study.scenarios.scaling
        for n in scaling.events:
            found.append(Scenario(f"scaling/{n}", "scaling", tuple((e, n) for e in experiments),
                                  ("federated", "local"), tuple(scaling.labelled_events)))
    return found


def setup_for(scenario: Scenario, method: str, experiment: str, seed: int) -> Setup:
    """The pre-training whose model `experiment` fine-tunes for this scenario and method."""
    if method == "scratch":
        return Setup("scratch", (), seed)
    if method == "local":
        return Setup("local", ((experiment, scenario.events_of(experiment)),), seed)
    return Setup(method, scenario.events, seed)


def setups(study: StudyConfig) -> list[Setup]:
    """Every pre-training the study runs, each once, largest first (the main table is done first).
    Scratch has one setup per seed too: its replicates are its own fine-tunings (see `replicate_of`)."""
    found: dict[str, Setup] = {}
    for scenario in scenarios(study):
        for method in scenario.methods:
            for experiment in study.experiments:
                for seed in study.pretrain_seeds()[:1] if method == "scratch" else study.pretrain_seeds():
                    setup = setup_for(scenario, method, experiment, seed)
                    found.setdefault(setup.key(), setup)
    return sorted(found.values(), key=lambda s: (s.method == "scratch", -sum(n for _, n in s.events), s.key()))


def replicate_of(setup: Setup, finetune_index: int) -> str:
    """The independent unit a fine-tuning belongs to: its pre-training (runs on one pre-trained model are
    correlated), or for scratch the fine-tuning itself (own initial weights, own labelled subset)."""
    return f"{setup.seed}" if setup.method != "scratch" else f"{setup.seed}/{finetune_index}"


def steps(study: StudyConfig, setup: Setup) -> int:
    """Optimizer steps of a pre-training: rounds × local_steps per experiment it trains on."""
    return study.steps_per_experiment() * max(1, len(setup.events))
