"""A study's results, rebuilt from MLflow alone (`crossfed report RUN`; the study itself prints the same).

What the study logs under its parent run (``crossfed.kind=study``, the config as ``study.yaml``):
- one pre-training child run per setup (``crossfed.kind=pretrain`` + the setup's tags, see `plan.Setup`),
  holding the federation's per-round metrics and the ``budget/*`` totals: events processed per
  experiment, optimizer steps, device-hours;
- one fine-tuning child run per (setup, experiment) (``crossfed.kind=finetune``, ``crossfed.experiment``)
  holding ``finetune.npz``: per task and ladder point the runs' AUC, rejections and accuracy, their mean
  DeLong components on the shared test set and their background rejection on a grid of ε_S.
  It is opened by the fine-tuning job when it starts; under it each single fine-tuning has a run of its own
  (``crossfed.kind=finetune-single``: its settings as params, the source model as tag and param
  ``source_model``, per-epoch losses, test metrics).
From these `analyse` computes every table cell (mean ± SE over seeds and test set), the paired differences
federated − local and federated − centralized with 95 % intervals and verdicts, and the budget table.
The parent run holds the study's settings as params (`log_study_params`) and, at the end, its results
(`log_summary`): summary metrics, a description stating the question and the answer, the tables as MLflow
tables (the UI shows them as tables) and as CSV/JSON, the plots.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossfed.errors import CrossfedError
from crossfed.study import plan
from crossfed.study import statistics as st
from crossfed.study.config import StudyConfig, study_from_dict

# --- the logging contract shared with crossfed.study.runner ----------------------------------------------
KIND, EXPERIMENT, PARENT = "crossfed.kind", "crossfed.experiment", "mlflow.parentRunId"
CONFIG_ARTIFACT, FINETUNE_ARTIFACT = "study.yaml", "finetune.npz"
ROUND_LOSS = "global/val_loss"  # the federation's validation loss of the global model, per round
BUDGET_EVENTS, BUDGET_STEPS, BUDGET_HOURS = "budget/events_processed", "budget/steps", "budget/device_hours"
COMPARISONS = (("federated", "local"), ("federated", "centralized"))
STUDY_SCALE = {"pretrain_seeds": 3, "finetune_seeds": 5, "test_events_per_class": 10_000}
DETECT = 0.01  # the AUC difference a study must resolve (its intervals' half-widths at most this)


@dataclass
class FinetuneRecord:
    """One fine-tuning child run: (task, labelled events) -> the arrays of `jobs.summarise`."""

    setup: plan.Setup
    experiment: str
    results: dict[tuple[str, int], dict[str, np.ndarray]]
    run_id: str | None = None

    def save(self, path: Path) -> Path:
        np.savez_compressed(path, **{f"{task}|{n}|{name}": value for (task, n), values in self.results.items()
                                     for name, value in values.items()})
        return path

    @classmethod
    def load(cls, path: Path, setup: plan.Setup, experiment: str, run_id: str | None = None) -> "FinetuneRecord":
        results: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        with np.load(path) as stored:
            for key in stored.files:
                task, n, name = key.split("|")
                results.setdefault((task, int(n)), {})[name] = stored[key]
        return cls(setup, experiment, results, run_id)


@dataclass
class PretrainRecord:
    setup: plan.Setup
    run_id: str
    events_processed: dict[str, float]  # per experiment
    steps: float
    device_hours: float
    loss_history: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Cell:
    scenario: str
    task: str
    experiment: str
    method: str
    labelled_events: int
    auc: st.Estimate
    rejection: st.Estimate | None  # 1/ε_B at ε_S = 0.3; None when no run had a finite one


@dataclass
class Difference:
    scenario: str
    task: str
    experiment: str
    comparison: tuple[str, str]  # (federated, local): federated − local
    labelled_events: int
    estimate: st.Estimate
    verdict: str


@dataclass
class BudgetRow:
    scenario: str
    method: str
    events_processed: dict[str, float]  # per experiment, per pre-training (mean over seeds)
    steps: float  # optimizer steps of the method's pre-training runs together (mean over seeds)
    device_hours: float
    runs: int


@dataclass
class StudyReport:
    parent_run_id: str
    experiment_id: str
    study: StudyConfig
    scenarios: list[plan.Scenario]
    cells: list[Cell]
    differences: list[Difference]
    budget: list[BudgetRow]
    test_events: dict[str, dict[str, tuple[int, int]]]  # experiment -> task -> (signal, background)
    finetunes: dict[tuple[str, str], FinetuneRecord]
    pretrains: dict[str, PretrainRecord]
    notes: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def cell(self, scenario: str, task: str, experiment: str, method: str, n: int) -> Cell | None:
        return next((c for c in self.cells if (c.scenario, c.task, c.experiment, c.method, c.labelled_events)
                     == (scenario, task, experiment, method, n)), None)

    def table_values(self) -> dict[tuple, tuple[float, float]]:
        """(scenario, task, experiment, method, labelled events) -> (mean AUC, its SE): what the table shows."""
        return {(c.scenario, c.task, c.experiment, c.method, c.labelled_events): (c.auc.mean, c.auc.se)
                for c in self.cells}


# --- statistics of every cell ------------------------------------------------------------------------------

def _runs(study: StudyConfig, scenario: plan.Scenario, method: str, experiment: str,
          finetunes: dict[tuple[str, str], FinetuneRecord]) -> list[tuple[plan.Setup, FinetuneRecord]]:
    seeds = study.pretrain_seeds()[:1] if method == "scratch" else study.pretrain_seeds()
    found = []
    for seed in seeds:
        setup = plan.setup_for(scenario, method, experiment, seed)
        record = finetunes.get((setup.key(), experiment))
        if record is not None:
            found.append((setup, record))
    return found


def _auc_cell(runs, task: str, n: int) -> st.Estimate:
    values, replicates, v10, v01 = [], [], [], []
    for setup, record in runs:
        result = record.results[(task, n)]
        values += result["auc"].tolist()
        replicates += [plan.replicate_of(setup, f) for f in range(len(result["auc"]))]
        v10.append(result["v10"])
        v01.append(result["v01"])
    return st.estimate(values, replicates, st.delong_variance(np.mean(v10, 0), np.mean(v01, 0)))


def _rejection_cell(runs, task: str, n: int) -> st.Estimate | None:
    values, replicates, background = [], [], 0
    for setup, record in runs:
        result = record.results[(task, n)]
        background = int(result["test_events"][1])
        for f, value in enumerate(result["rejection_03"]):
            if math.isfinite(value):  # no background passing at all: not averageable, left out
                values.append(float(value))
                replicates.append(plan.replicate_of(setup, f))
    if not values:
        return None
    return st.estimate(values, replicates, st.rejection_variance(float(np.mean(values)), background))


def _difference(runs_a, runs_b, task: str, n: int) -> st.Estimate | None:
    """Paired by pre-training seed and fine-tuning seed (same labelled subset, same test set)."""
    by_seed = {setup.seed: record for setup, record in runs_b}
    values, replicates, v10, v01 = [], [], [], []
    for setup, record in runs_a:
        if setup.seed not in by_seed:
            continue
        a, b = record.results[(task, n)], by_seed[setup.seed].results[(task, n)]
        values += (a["auc"] - b["auc"]).tolist()
        replicates += [str(setup.seed)] * len(a["auc"])
        v10.append(a["v10"] - b["v10"])
        v01.append(a["v01"] - b["v01"])
    if not values:
        return None
    return st.estimate(values, replicates, st.delong_variance(np.mean(v10, 0), np.mean(v01, 0)))


def _verdict(estimate: st.Estimate, comparison: tuple[str, str], experiment: str, n: int, task: str,
             scenario: str) -> str:
    where = f"{experiment} at {n:,} labels ({task}, {scenario})"
    a, b = comparison
    if b == "local":
        phrases = (f"federation improves {where}", f"federation worsens {where}",
                   f"no significant difference between federated and local pre-training for {where}")
    else:
        phrases = (f"federated beats {b} pre-training for {where}", f"federated falls short of {b} for {where}",
                   f"no significant difference between federated and {b} pre-training for {where}")
    return st.verdict(estimate, *phrases)


def _budget(study: StudyConfig, scenario: plan.Scenario, method: str, pretrains: dict[str, PretrainRecord]) -> BudgetRow:
    per_seed = []
    for seed in study.pretrain_seeds():
        keys = {plan.setup_for(scenario, method, e, seed).key() for e in study.experiments}
        records = [pretrains[k] for k in keys if k in pretrains]
        if records:
            events = {}
            for record in records:
                for experiment, value in record.events_processed.items():
                    events[experiment] = events.get(experiment, 0.0) + value
            per_seed.append((events, sum(r.steps for r in records), sum(r.device_hours for r in records)))
    if not per_seed:
        return BudgetRow(scenario.name, method, {}, 0.0, 0.0, 0)
    experiments = list(dict.fromkeys(e for events, _, _ in per_seed for e in events))
    return BudgetRow(
        scenario.name, method,
        {e: float(np.mean([events.get(e, 0.0) for events, _, _ in per_seed])) for e in experiments},
        float(np.mean([s for _, s, _ in per_seed])), float(np.mean([h for _, _, h in per_seed])), len(per_seed))


def analyse(study: StudyConfig, parent_run_id: str, experiment_id: str, pretrains: dict[str, PretrainRecord],
            finetunes: dict[tuple[str, str], FinetuneRecord]) -> StudyReport:
    scenarios = plan.scenarios(study)
    cells, differences, budget = [], [], []
    for scenario in scenarios:
        for method in scenario.methods:
            if method != "scratch" and scenario.kind != "scaling":
                budget.append(_budget(study, scenario, method, pretrains))
        for task in study.tasks:
            for experiment in study.experiments:
                runs = {m: _runs(study, scenario, m, experiment, finetunes) for m in scenario.methods}
                for n in scenario.ladder:
                    for method in scenario.methods:
                        if runs[method]:
                            cells.append(Cell(scenario.name, task, experiment, method, n,
                                              _auc_cell(runs[method], task, n), _rejection_cell(runs[method], task, n)))
                    for comparison in COMPARISONS:
                        if not all(runs.get(m) for m in comparison):
                            continue
                        estimate = _difference(runs[comparison[0]], runs[comparison[1]], task, n)
                        if estimate is not None:
                            differences.append(Difference(scenario.name, task, experiment, comparison, n, estimate,
                                                          _verdict(estimate, comparison, experiment, n, task,
                                                                   scenario.name)))
    test_events = {}
    for (_, experiment), record in finetunes.items():
        for (task, _), result in record.results.items():
            test_events.setdefault(experiment, {})[task] = tuple(int(x) for x in result["test_events"])
    report = StudyReport(parent_run_id, experiment_id, study, scenarios, cells, differences, budget, test_events,
                         finetunes, pretrains)
    report.notes = _indicative(report)
    return report


def resolution(report: StudyReport) -> dict[str, float] | None:
    """How small a difference the study resolves: a measured paired difference is significant when it exceeds
    its 95 % interval's half-width, so the half-widths say what a null result rules out."""
    widths = [(d.estimate.high - d.estimate.low) / 2 for d in report.differences
              if math.isfinite(d.estimate.high - d.estimate.low)]
    if not widths:
        return None
    return {"median_half_width": float(np.median(widths)), "largest_half_width": float(max(widths)),
            "intervals": len(widths), f"resolving_{DETECT}": sum(w <= DETECT for w in widths)}


def _indicative(report: StudyReport) -> list[str]:
    """Why these numbers cannot settle the question, if they cannot (empty at study scale)."""
    study, notes = report.study, []
    if study.repeats.pretrain_seeds < STUDY_SCALE["pretrain_seeds"]:
        notes.append(f"{study.repeats.pretrain_seeds} pre-training seed(s): "
                     + ("the spread between pre-trainings is not in the errors"
                        if study.repeats.pretrain_seeds == 1 else "the spread between pre-trainings is poorly known"))
    if study.repeats.finetune_seeds < STUDY_SCALE["finetune_seeds"]:
        notes.append(f"{study.repeats.finetune_seeds} fine-tuning seed(s) per ladder point")
    smallest = min((min(pair) for tasks in report.test_events.values() for pair in tasks.values()), default=0)
    if smallest < STUDY_SCALE["test_events_per_class"]:
        notes.append(f"as few as {smallest:,} test events per class (a study needs 10,000: AUC error ≤ 0.005)")
    resolved = resolution(report)
    if resolved and resolved["median_half_width"] > DETECT:
        notes.append(f"the median 95 % interval of a paired difference is ±{resolved['median_half_width']:.3f}: "
                     f"a difference of {DETECT} AUC is not resolved")
    return notes


# --- reading a study back from MLflow ---------------------------------------------------------------------

def _download(client, run_id: str, artifact: str, folder: str) -> Path:
    import mlflow

    try:
        return Path(client.download_artifacts(run_id, artifact, folder))
    except (OSError, mlflow.exceptions.MlflowException) as err:
        raise CrossfedError(f"run {run_id}: cannot read its artifact {artifact} ({err})") from None


def pretrain_record(client, run, setup: plan.Setup) -> PretrainRecord:
    metrics = run.data.metrics
    events = {k.removeprefix(BUDGET_EVENTS + "/"): v for k, v in metrics.items() if k.startswith(BUDGET_EVENTS + "/")}
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, ROUND_LOSS)]
    return PretrainRecord(setup, run.info.run_id, events, metrics.get(BUDGET_STEPS, 0.0),
                          metrics.get(BUDGET_HOURS, 0.0), sorted(history))


def collect(client, parent) -> StudyReport:
    """Read a study's parent run and its children into a `StudyReport` (no files or plots yet)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per artifact would flood
    import yaml

    tags = parent.data.tags
    if tags.get(KIND) != "study":
        raise CrossfedError(f"run {parent.info.run_id} is not a crossfed study run (tag {KIND} is {tags.get(KIND)!r})")
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`{PARENT}` = '{parent.info.run_id}'", max_results=50_000)
    pretrains, finetunes = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        config_file = _download(client, parent.info.run_id, CONFIG_ARTIFACT, folder)
        study = study_from_dict(yaml.safe_load(config_file.read_text()), f"run {parent.info.run_id}: {CONFIG_ARTIFACT}")
        for child in children:
            kind = child.data.tags.get(KIND)
            if kind not in ("pretrain", "finetune") or child.info.status != "FINISHED":
                continue
            setup = plan.Setup.from_tags(child.data.tags)
            if kind == "pretrain":
                pretrains[setup.key()] = pretrain_record(client, child, setup)
            else:
                target = Path(folder) / child.info.run_id
                target.mkdir()
                path = _download(client, child.info.run_id, FINETUNE_ARTIFACT, str(target))
                experiment = child.data.tags[EXPERIMENT]
                finetunes[(setup.key(), experiment)] = FinetuneRecord.load(path, setup, experiment, child.info.run_id)
    if not finetunes:
        raise CrossfedError(f"run {parent.info.run_id}: no finished fine-tuning runs (did the study finish?)")
    return analyse(study, parent.info.run_id, parent.info.experiment_id, pretrains, finetunes)


def build_report(run: str, out_dir: str | Path | None = None, tracking_uri: str | None = None) -> StudyReport:
    """Rebuild study RUN's (id or name) tables, files and plots from the MLflow store."""
    import mlflow

    from crossfed import tracking

    uri = tracking_uri or tracking.tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise CrossfedError(f"no MLflow store at {uri} (give the study's store with --tracking-uri)")
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    report = collect(client, tracking.find_run(run))
    write_outputs(report, Path(out_dir) if out_dir else Path("crossfed-report") / report.parent_run_id)
    return report


# --- files: tables as CSV and JSON, verdicts, plots ---------------------------------------------------------

def cell_rows(report: StudyReport) -> list[dict]:
    rows = []
    for c in report.cells:
        row = {"scenario": c.scenario, "task": c.task, "experiment": c.experiment, "method": c.method,
               "labelled_events": c.labelled_events}
        row.update({f"auc_{k}": v for k, v in c.auc.as_dict().items()})
        if c.rejection is not None:
            row.update({f"rejection_0.3_{k}": v for k, v in c.rejection.as_dict().items()})
        rows.append(row)
    return rows


def difference_rows(report: StudyReport) -> list[dict]:
    return [{"scenario": d.scenario, "task": d.task, "experiment": d.experiment,
             "comparison": f"{d.comparison[0]}-{d.comparison[1]}", "labelled_events": d.labelled_events,
             **{f"auc_difference_{k}": v for k, v in d.estimate.as_dict().items()}, "verdict": d.verdict}
            for d in report.differences]


def budget_rows(report: StudyReport) -> list[dict]:
    return [{"scenario": b.scenario, "method": b.method,
             **{f"events_processed_{e}": v for e, v in b.events_processed.items()},
             "optimizer_steps": b.steps, "device_hours": b.device_hours, "pretrain_seeds": b.runs} for b in report.budget]


def _csv(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_outputs(report: StudyReport, out_dir: Path) -> list[Path]:
    """results.json, the three CSV tables, verdicts.txt and the plots, into out_dir."""
    from crossfed.study import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {"cells": cell_rows(report), "differences": difference_rows(report), "budget": budget_rows(report)}
    files = []
    for name, rows in tables.items():
        files.append(out_dir / f"{name}.csv")
        files[-1].write_text(_csv(rows))
    summary = {"parent_run_id": report.parent_run_id, "study": report.study.name, "notes": report.notes,
               "resolution": resolution(report),
               "test_events": {e: {t: list(v) for t, v in tasks.items()} for e, tasks in report.test_events.items()},
               **tables}
    files.append(out_dir / "results.json")
    files[-1].write_text(json.dumps(summary, indent=1, default=_json_number))
    files.append(out_dir / "verdicts.txt")
    files[-1].write_text("\n".join(d.verdict for d in report.differences) + "\n")
    report.files = files
    report.plots = plots.draw_all(report, out_dir)
    return files + report.plots


def _json_number(value):
    return float(value) if isinstance(value, (np.floating, np.integer)) else str(value)


# --- the parent run's summary -------------------------------------------------------------------------------

def summary_metrics(report: StudyReport) -> dict[str, float]:
    """auc/<scenario>/<task>/<experiment>/<method>/<labels>/{mean,std,se},
    rejection_0.3/<scenario>/<task>/<experiment>/<method>/<labels>/{mean,se} (1/ε_B at ε_S = 0.3) and
    auc_difference/<scenario>/<task>/<experiment>/<a>-<b>/<labels>/{mean,se,ci_low,ci_high}."""
    metrics = {}
    for c in report.cells:
        key = f"auc/{c.scenario}/{c.task}/{c.experiment}/{c.method}/{c.labelled_events}"
        metrics.update({f"{key}/mean": c.auc.mean, f"{key}/std": c.auc.std, f"{key}/se": c.auc.se})
    for d in report.differences:
        key = f"auc_difference/{d.scenario}/{d.task}/{d.experiment}/{d.comparison[0]}-{d.comparison[1]}/{d.labelled_events}"
        metrics.update({f"{key}/mean": d.estimate.mean, f"{key}/se": d.estimate.se,
                        f"{key}/ci_low": d.estimate.low, f"{key}/ci_high": d.estimate.high})
    for c in report.cells:
        if c.rejection is not None:
            key = f"rejection_0.3/{c.scenario}/{c.task}/{c.experiment}/{c.method}/{c.labelled_events}"
            metrics.update({f"{key}/mean": c.rejection.mean, f"{key}/se": c.rejection.se})
    resolved = resolution(report)
    if resolved:
        metrics.update({"auc_difference_half_width/median": resolved["median_half_width"],
                        "auc_difference_half_width/largest": resolved["largest_half_width"]})
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


def log_summary(client, report: StudyReport) -> None:
    """Everything the parent run carries about the results: the summary metrics, the description (question
    and answer), the tables (MLflow tables under tables/, CSV and JSON under results/), the verdicts and the
    plots. One place, so later additions (models, tables) extend it."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in summary_metrics(report).items()]
    for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(report.parent_run_id, metrics=metrics[start:start + 1000])
    client.set_tag(report.parent_run_id, "mlflow.note.content", answer(report))
    tables = {TABLES["cells"]: cell_rows(report), TABLES["differences"]: difference_rows(report),
              TABLES["budget"]: budget_rows(report)}
    for artifact, rows in tables.items():
        if rows:
            columns = list(dict.fromkeys(k for row in rows for k in row))
            client.log_table(report.parent_run_id, {c: [_table_value(row.get(c)) for row in rows] for c in columns},
                             artifact)
    for path in report.files:
        client.log_artifact(report.parent_run_id, str(path), "results")
    for path in report.plots:
        client.log_artifact(report.parent_run_id, str(path), "plots")


# The parent run's MLflow tables (`MlflowClient.log_table`): the AUC cells, the paired differences, the budgets.
TABLES = {"cells": "tables/auc.json", "differences": "tables/differences.json", "budget": "tables/budget.json"}


def _table_value(value):
    """A JSON-safe cell: infinities and NaN (no background passing, one replicate) as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def log_study_params(client, run_id: str, study: StudyConfig) -> None:
    """The study's settings (scenarios, repeats, seeds, model and training presets, ladder...) as the parent
    run's params, dotted as in study.yaml."""
    from mlflow.entities import Param

    from crossfed.tracking import flatten

    raw = study.model_dump(mode="json", by_alias=True, exclude={"training": {"steps"}})
    params = [Param(k, v) for k, v in flatten(raw).items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=params[start:start + 100])


def question(study: StudyConfig, setups: list[plan.Setup]) -> str:
    """The study's question, and what it runs to answer it (the parent run's description until the answer)."""
    experiments = " and ".join(study.experiments)
    pretrainings = sum(s.method != "scratch" for s in setups)
    scenarios = ", ".join(s.name for s in plan.scenarios(study))
    return (f"Study {study.name}: does pre-training on {experiments} together, federated (no events pooled), give "
            f"each experiment a better {' and '.join(study.tasks)} classifier than pre-training on its own events "
            f"(local), and how close does it come to pooling them (centralized)? Scenarios {scenarios}; "
            f"{pretrainings} pre-trainings ({study.repeats.pretrain_seeds} seed(s) each), fine-tuned with "
            f"{', '.join(map(str, study.finetune.labelled_events))} labelled events, "
            f"{study.repeats.finetune_seeds} fine-tuning seed(s) each.")


def answer(report: StudyReport) -> str:
    """One paragraph: the question, the verdicts counted per comparison, the differences at the largest
    ladder point of the symmetric scenarios, and why the numbers are only indicative if they are."""
    study = report.study
    text = [question(study, plan.setups(study)), "Answer (paired AUC differences, 95 % intervals):"]
    for a, b in COMPARISONS:
        found = [d for d in report.differences if d.comparison == (a, b)]
        if not found:
            continue
        better = sum(d.estimate.significant() and d.estimate.mean > 0 for d in found)
        worse = sum(d.estimate.significant() and d.estimate.mean < 0 for d in found)
        text.append(f"{a} better than {b} in {better} of {len(found)} comparisons, worse in {worse}, no "
                    f"significant difference in {len(found) - better - worse};")
    largest = max(study.finetune.labelled_events)
    headline = [d for d in report.differences if d.comparison == ("federated", "local") and d.labelled_events == largest
                and not d.scenario.startswith("scaling")]
    if headline:
        text.append(f"federated − local at {largest:,} labelled events: " + ", ".join(
            f"{d.experiment} {d.estimate.mean:+.3f} ± {d.estimate.se:.3f} ({d.task}, {d.scenario})" for d in headline) + ".")
    if report.notes:
        text.append("Indicative only: " + "; ".join(report.notes) + ".")
    text.append("Tables: tables/ (MLflow tables), results/; plots: plots/; verdicts: results/verdicts.txt.")
    return " ".join(text)


# --- the printed tables ---------------------------------------------------------------------------------------

def _auc_text(cell: Cell | None) -> str:
    if cell is None:
        return "—"
    rejection = f"{cell.rejection.mean:.1f}±{cell.rejection.se:.1f}" if cell.rejection else "∞"
    return f"{cell.auc.mean:.3f}±{cell.auc.se:.3f} ({rejection})"


def rich_tables(report: StudyReport) -> list:
    """The tables `crossfed study` and `crossfed report` print: per scenario and task the AUC table; the
    scaling table; the paired differences; the budgets."""
    from rich.table import Table

    tables = []
    for scenario in report.scenarios:
        if scenario.kind == "scaling":
            continue
        for task in report.study.tasks:
            table = Table(title=f"{task}, {scenario.name} ({scenario.describe()}): AUC ± SE  (1/ε_B at ε_S = 0.3 ± SE)")
            table.add_column("experiment")
            table.add_column("pre-training")
            for n in scenario.ladder:
                table.add_column(f"{n:,} labelled", justify="right")
            for experiment in report.study.experiments:
                for method in scenario.methods:
                    table.add_row(experiment, method, *[_auc_text(report.cell(scenario.name, task, experiment, method, n))
                                                        for n in scenario.ladder])
                table.add_section()
            tables.append(table)
    scaling = [s for s in report.scenarios if s.kind == "scaling"]
    if scaling:
        for task in report.study.tasks:
            for n in scaling[0].ladder:
                table = Table(title=f"{task}: AUC ± SE against pre-training events per experiment, {n:,} labelled events")
                table.add_column("experiment")
                table.add_column("pre-training")
                for scenario in scaling:
                    table.add_column(f"{scenario.events[0][1]:,}", justify="right")
                for experiment in report.study.experiments:
                    for method in scaling[0].methods:
                        cells = [report.cell(s.name, task, experiment, method, n) for s in scaling]
                        table.add_row(experiment, method,
                                      *[f"{c.auc.mean:.3f}±{c.auc.se:.3f}" if c else "—" for c in cells])
                    table.add_section()
                tables.append(table)
    if report.differences:
        table = Table(title="paired differences in AUC: mean ± SE, * where the 95 % interval excludes 0 (intervals: "
                            "verdicts below)")
        for column in ("scenario", "task", "experiment", "difference"):
            table.add_column(column)
        ladder = sorted({d.labelled_events for d in report.differences})
        for n in ladder:
            table.add_column(f"{n:,} labelled", justify="right")
        groups = dict.fromkeys((d.scenario, d.task, d.experiment, d.comparison) for d in report.differences)
        for scenario, task, experiment, comparison in groups:
            by_n = {d.labelled_events: d.estimate for d in report.differences
                    if (d.scenario, d.task, d.experiment, d.comparison) == (scenario, task, experiment, comparison)}
            table.add_row(scenario, task, experiment, f"fed − {comparison[1][:5]}",
                          *[_difference_text(by_n.get(n)) for n in ladder])
        tables.append(table)
    if report.budget:
        table = Table(title="what each method's pre-training processed (mean per seed)")
        for column in ("scenario", "method"):
            table.add_column(column)
        experiments = list(report.study.experiments)
        for experiment in experiments:
            table.add_column(f"events processed, {experiment}", justify="right")
        table.add_column("optimizer steps", justify="right")
        table.add_column("device-hours", justify="right")
        for row in report.budget:
            table.add_row(row.scenario, row.method, *[f"{row.events_processed.get(e, 0):,.0f}" for e in experiments],
                          f"{row.steps:,.0f}", f"{row.device_hours:.3g}")
        tables.append(table)
    return tables


def _difference_text(estimate: st.Estimate | None) -> str:
    if estimate is None:
        return "—"
    return f"{estimate.mean:+.3f}±{estimate.se:.3f}{'*' if estimate.significant() else ' '}"


def print_report(console, report: StudyReport, tracking_uri: str) -> None:
    for table in rich_tables(report):
        console.print(table)
    if report.notes:
        console.print("[bold yellow]indicative numbers[/] (not a study: " + "; ".join(report.notes) + ")")
    console.print(_uncertainty_note(report))
    resolved = resolution(report)
    if resolved:
        console.print(f"resolution: a paired difference is significant when it exceeds its 95 % interval's half-width; "
                      f"half-widths here: median ±{resolved['median_half_width']:.3f}, largest "
                      f"±{resolved['largest_half_width']:.3f}; {resolved[f'resolving_{DETECT}']} of "
                      f"{resolved['intervals']} intervals resolve {DETECT} AUC", highlight=False)
    if report.differences:
        console.print("[bold]verdicts[/]")
        for difference in report.differences:
            console.print(f"  {difference.verdict}", highlight=False)
    _print_models(console, report)
    for path in report.plots:
        console.print(f"plot: {path}", highlight=False)
    console.print(f"tables: {report.files[0].parent if report.files else '-'}", highlight=False)
    console.print(f"MLflow run {report.parent_run_id}; to browse it:\nmlflow ui --backend-store-uri {tracking_uri}\n"
                  f"then open http://127.0.0.1:5000/#/experiments/{report.experiment_id}/runs/{report.parent_run_id}",
                  highlight=False)
    console.print(f"rebuild this report: crossfed report {report.parent_run_id} --tracking-uri {tracking_uri}",
                  highlight=False)


def _print_models(console, report: StudyReport) -> None:
    """The first seed's pre-trained models of the first scenario, as references `crossfed finetune -c` takes:
    what a user fine-tunes their own analysis from."""
    first = plan.scenarios(report.study)[0]
    seed = report.study.pretrain_seeds()[0]
    keys = {plan.setup_for(first, method, experiment, seed).key()
            for method in first.methods if method != "scratch" for experiment in report.study.experiments}
    records = sorted((report.pretrains[k] for k in keys if k in report.pretrains), key=lambda r: r.setup.key())
    if not records:
        return
    console.print(f"[bold]pre-trained models[/] ({first.name}, seed {seed}); fine-tune one with "
                  "crossfed finetune CONFIG -e EXPERIMENT -c URI", highlight=False)
    for record in records:
        console.print(f"  {record.setup.key()}: runs:/{record.run_id}/model", highlight=False)


def _uncertainty_note(report: StudyReport) -> str:
    study = report.study
    tests = ", ".join(f"{e} {min(min(p) for p in tasks.values()):,}+" for e, tasks in report.test_events.items())
    return (f"± is one standard error of the mean over {study.repeats.pretrain_seeds} pre-training seed(s) × "
            f"{study.repeats.finetune_seeds} fine-tuning(s) (each its own labelled subset), plus the test set's "
            f"statistical error (DeLong; test events per class: {tests}). Fine-tuning: "
            f"{study.finetune.mode} for pre-trained models, full training for scratch.")
