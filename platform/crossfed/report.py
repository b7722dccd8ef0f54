"""Rebuild a demo's results table and plots from MLflow alone (`crossfed report RUN`).

The demo (`crossfed.demo`) logs under one parent run, tagged ``crossfed.kind=demo``:
- pre-training child runs (``crossfed.kind=pretrain``, ``crossfed.method``, ``crossfed.experiment`` for
  local runs) holding the per-round loss written by the federation;
- fine-tuning child runs (``crossfed.kind=finetune``, ``crossfed.experiment``, ``crossfed.method``,
  ``crossfed.labelled_events``) holding the held-out metrics below and the ROC curve as ``roc.json``.
Everything here reads only those runs, so a report rebuilt later equals the one the demo printed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from crossfed.errors import CrossfedError

# --- the logging contract shared with crossfed.demo -------------------------------------------------
KIND, EXPERIMENT, METHOD, LABELLED = "crossfed.kind", "crossfed.experiment", "crossfed.method", "crossfed.labelled_events"
EXPERIMENTS, METHODS, LADDER = "crossfed.experiments", "crossfed.methods", "crossfed.ladder"
PARENT = "mlflow.parentRunId"
METHOD_ORDER = ("federated", "local", "centralized", "scratch")
AUC, REJECTION_03, REJECTION_05, ACCURACY = "auc", "rejection_at_eps_s_0.3", "rejection_at_eps_s_0.5", "accuracy"
ROC_ARTIFACT = "roc.json"
# Per-round pre-training loss: the federation's validation loss of the global model (mean over experiments).
ROUND_LOSS = "global/val_loss"
PLOT_NAMES = ("roc_curves.png", "auc_vs_labelled_events.png", "loss_per_round.png")


@dataclass
class FinetuneResult:
    """One fine-tuning: which experiment, which pre-training, how many labelled events, held-out metrics."""

    experiment: str
    method: str
    labelled_events: int
    auc: float
    rejection_03: float
    rejection_05: float
    accuracy: float
    roc: dict | None = None  # {"fpr": [...], "tpr": [...]}
    run_id: str | None = None

    def key(self) -> tuple[str, str, int]:
        return self.experiment, self.method, self.labelled_events


@dataclass
class Report:
    parent_run_id: str
    experiment_id: str
    experiments: list[str]
    methods: list[str]
    ladder: list[int]
    results: list[FinetuneResult]
    loss_histories: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    # "method/experiment" -> (pre-training run id, model file): a demo's own report names them for
    # `crossfed finetune -c`; one rebuilt from MLflow (`crossfed report`) leaves this empty
    models: dict[str, tuple[str, str]] = field(default_factory=dict)

    def table_values(self) -> dict[tuple[str, str, int], tuple[float, float]]:
        """(experiment, method, labelled events) -> (AUC, 1/eps_B at eps_S=0.3): what the table shows."""
        return {r.key(): (r.auc, r.rejection_03) for r in self.results}


def default_tracking_uri() -> str:
    """The MLflow store the platform uses by default: $MLFLOW_TRACKING_URI, else ./mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


def _children(client, parent) -> list:
    return list(client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{PARENT}` = '{parent.info.run_id}'"))


def _finetune_result(client, child) -> FinetuneResult:
    import mlflow

    tags, metrics = child.data.tags, child.data.metrics
    missing = [k for k in (AUC, REJECTION_03, REJECTION_05, ACCURACY) if k not in metrics]
    if missing:
        raise CrossfedError(f"run {child.info.run_id}: fine-tuning run lacks the metric(s) {', '.join(missing)}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            roc = json.loads(Path(client.download_artifacts(child.info.run_id, ROC_ARTIFACT, tmp)).read_text())
        except (OSError, mlflow.exceptions.MlflowException):  # a run without its ROC still has its table row
            roc = None
    return FinetuneResult(
        experiment=tags[EXPERIMENT], method=tags[METHOD], labelled_events=int(tags[LABELLED]),
        auc=metrics[AUC], rejection_03=_unclamped(metrics[REJECTION_03]),
        rejection_05=_unclamped(metrics[REJECTION_05]), accuracy=metrics[ACCURACY], roc=roc, run_id=child.info.run_id,
    )


def _unclamped(value: float) -> float:
    """MLflow stores an infinite rejection (no background passes) as the largest float; give it back as inf."""
    return math.inf if value >= sys.float_info.max else value


def _loss_history(client, child) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(child.info.run_id, ROUND_LOSS)]


def collect(client, parent) -> Report:
    """Read a demo parent run and its children into a `Report` (no plots yet)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per ROC would flood the terminal
    tags = parent.data.tags
    if tags.get(KIND) != "demo":
        raise CrossfedError(f"run {parent.info.run_id} is not a crossfed demo run (tag {KIND} is {tags.get(KIND)!r})")
    results, histories = [], {}
    for child in _children(client, parent):
        kind = child.data.tags.get(KIND)
        if kind == "finetune":
            results.append(_finetune_result(client, child))
        elif kind == "pretrain":
            method, experiment = child.data.tags[METHOD], child.data.tags.get(EXPERIMENT)
            histories[f"{method}/{experiment}" if method == "local" else method] = _loss_history(client, child)
    histories = dict(sorted(histories.items(), key=lambda item: METHOD_ORDER.index(item[0].split("/")[0])))
    experiments = tags[EXPERIMENTS].split(",")
    methods = tags[METHODS].split(",")
    ladder = [int(n) for n in tags[LADDER].split(",")]
    results.sort(key=lambda r: (experiments.index(r.experiment), methods.index(r.method), r.labelled_events))
    return Report(parent.info.run_id, parent.info.experiment_id, experiments, methods, ladder, results, histories)


def draw_plots(report: Report, out_dir: Path) -> list[Path]:
    from crossfed import plots

    out_dir = Path(out_dir)
    largest = max(report.ladder)
    report.plots = [
        plots.plot_roc_curves(report.results, report.experiments, largest, out_dir / PLOT_NAMES[0]),
        plots.plot_auc_vs_labelled(report.results, report.experiments, out_dir / PLOT_NAMES[1]),
        plots.plot_loss_per_round(report.loss_histories, out_dir / PLOT_NAMES[2]),
    ]
    return report.plots


def write_table_json(report: Report, path: Path) -> Path:
    """The table's numbers as JSON rows (for scripts; the MLflow runs stay the source of truth)."""
    rows = [{"experiment": r.experiment, "method": r.method, "labelled_events": r.labelled_events, "auc": r.auc,
             "rejection_at_eps_s_0.3": r.rejection_03, "rejection_at_eps_s_0.5": r.rejection_05,
             "accuracy": r.accuracy, "run_id": r.run_id} for r in report.results]
    path.write_text(json.dumps({"parent_run_id": report.parent_run_id, "rows": rows}, indent=1))
    return path


def results_table(report: Report):
    """The rich table: AUC and 1/eps_B at eps_S=0.3 per experiment x method x labelled events."""
    from rich.table import Table

    table = Table(title="ttH vs tt on held-out events: AUC  (1/ε_B at ε_S=0.3)", show_lines=False)
    table.add_column("experiment")
    table.add_column("pre-training")
    for n in report.ladder:
        table.add_column(f"{n} labelled", justify="right")
    by_key = {r.key(): r for r in report.results}
    for experiment in report.experiments:
        best = {n: max((by_key[k].auc for k in by_key if k[0] == experiment and k[2] == n), default=None) for n in report.ladder}
        for method in report.methods:
            cells = []
            for n in report.ladder:
                r = by_key.get((experiment, method, n))
                if r is None:
                    cells.append("—")
                    continue
                text = f"{r.auc:.3f}  ({r.rejection_03:.1f})"
                cells.append(f"[bold]{text}[/]" if r.auc == best[n] else text)
            table.add_row(experiment, method, *cells)
        table.add_section()
    return table


def build_report(run: str, out_dir: str | Path | None = None, tracking_uri: str | None = None) -> Report:
    """Rebuild the table values and the plots of demo run RUN (id or name) from the MLflow store."""
    import mlflow

    from crossfed import tracking

    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise CrossfedError(f"no MLflow store at {uri} (give the demo's store with --tracking-uri)")
    mlflow.set_tracking_uri(uri)
    report = collect(mlflow.MlflowClient(), tracking.find_run(run))
    if not report.results:
        raise CrossfedError(f"run {report.parent_run_id}: no fine-tuning results logged (did the demo finish?)")
    draw_plots(report, Path(out_dir) if out_dir else Path("crossfed-report") / report.parent_run_id)
    return report


def ui_hint(tracking_uri: str, report: Report) -> str:
    """How to open the MLflow UI on the demo run."""
    return (
        f"mlflow ui --backend-store-uri {tracking_uri}\n"
        f"then open http://127.0.0.1:5000/#/experiments/{report.experiment_id}/runs/{report.parent_run_id}"
    )
