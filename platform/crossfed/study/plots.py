"""The study's figures (matplotlib, Agg): every line is a mean over runs with a ±1 standard-error band.

Shared by `crossfed study` and `crossfed report`, which draw them from the same `StudyReport`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)
import numpy as np  # noqa: E402

METHOD_STYLE = {
    "federated": ("tab:red", "federated (all experiments)"),
    "local": ("tab:blue", "local (own experiment only)"),
    "centralized": ("tab:green", "centralized (data pooled)"),
    "scratch": ("tab:gray", "no pre-training"),
}


def _style(method: str) -> tuple[str | None, str]:
    return METHOD_STYLE.get(method, (None, method))


def _grid(rows: int, columns: int, title: str):
    fig, axes = plt.subplots(rows, columns, figsize=(5.0 * columns, 3.9 * rows), squeeze=False)
    fig.suptitle(title)
    return fig, axes


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _band(ax, x, estimates, colour, label, **line):
    mean = np.array([e.mean for e in estimates])
    se = np.array([e.se for e in estimates])
    ax.plot(x, mean, marker="o", color=colour, label=label, **line)
    ax.fill_between(x, mean - se, mean + se, color=colour, alpha=0.2, linewidth=0)


def _log_ticks(ax, values) -> None:
    ax.set_xscale("log")
    ax.set_xticks(values, [f"{v:,}" for v in values])
    ax.minorticks_off()


def plot_auc_vs_labelled(report, scenario, path: Path) -> Path:
    tasks, experiments = list(report.study.tasks), list(report.study.experiments)
    fig, axes = _grid(len(tasks), len(experiments),
                      f"{scenario.name} ({scenario.describe()}): AUC against labelled events, ±1 SE")
    for row, task in enumerate(tasks):
        for column, experiment in enumerate(experiments):
            ax = axes[row][column]
            for method in scenario.methods:
                cells = [report.cell(scenario.name, task, experiment, method, n) for n in scenario.ladder]
                points = [(n, c.auc) for n, c in zip(scenario.ladder, cells) if c is not None]
                if points:
                    colour, label = _style(method)
                    _band(ax, [n for n, _ in points], [e for _, e in points], colour, label)
            _log_ticks(ax, list(scenario.ladder))
            ax.set_title(f"{task}: {experiment}")
            ax.set_xlabel("labelled events for fine-tuning")
            ax.set_ylabel("ROC AUC (test events)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return _save(fig, path)


def plot_scaling(report, scaling: list, path: Path) -> Path:
    """The KEK scaling plot, cross-experiment: AUC at fixed labelled counts against pre-training events per
    experiment, local against federated."""
    tasks, experiments = list(report.study.tasks), list(report.study.experiments)
    sizes = [s.events[0][1] for s in scaling]
    fig, axes = _grid(len(tasks), len(experiments), "AUC against pre-training events per experiment, ±1 SE")
    dashes = ["-", "--", ":", "-."]
    for row, task in enumerate(tasks):
        for column, experiment in enumerate(experiments):
            ax = axes[row][column]
            for i, n in enumerate(scaling[0].ladder):
                for method in scaling[0].methods:
                    cells = [report.cell(s.name, task, experiment, method, n) for s in scaling]
                    points = [(size, c.auc) for size, c in zip(sizes, cells) if c is not None]
                    if points:
                        colour, label = _style(method)
                        _band(ax, [p for p, _ in points], [e for _, e in points], colour,
                              f"{method}, {n:,} labelled", linestyle=dashes[i % len(dashes)])
            _log_ticks(ax, sizes)
            ax.set_title(f"{task}: {experiment}")
            ax.set_xlabel("pre-training events per experiment")
            ax.set_ylabel("ROC AUC (test events)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return _save(fig, path)


def plot_roc(report, scenario, path: Path) -> Path:
    """Background rejection against signal efficiency at the largest ladder point: mean over runs ± SE."""
    from crossfed.study.jobs import EFFICIENCY_GRID
    from crossfed.study.report import _runs

    tasks, experiments = list(report.study.tasks), list(report.study.experiments)
    n = max(scenario.ladder)
    fig, axes = _grid(len(tasks), len(experiments), f"{scenario.name}: ROC with {n:,} labelled events, ±1 SE")
    for row, task in enumerate(tasks):
        for column, experiment in enumerate(experiments):
            ax = axes[row][column]
            for method in scenario.methods:
                runs = _runs(report.study, scenario, method, experiment, report.finetunes)
                if not runs:
                    continue
                grid = np.concatenate([record.results[(task, n)]["rejection_grid"] for _, record in runs])
                grid = np.where(np.isfinite(grid), grid, np.nan)  # no background passing: no point drawn
                with warnings.catch_warnings():  # points where every run is such are all-NaN columns
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean = np.nanmean(grid, axis=0)
                    se = np.nanstd(grid, axis=0, ddof=1) / np.sqrt(np.sum(np.isfinite(grid), axis=0).clip(1)) \
                        if len(grid) > 1 else np.zeros_like(mean)
                colour, label = _style(method)
                ax.plot(EFFICIENCY_GRID, mean, color=colour, label=label)
                ax.fill_between(EFFICIENCY_GRID, mean - se, mean + se, color=colour, alpha=0.2, linewidth=0)
            ax.set_yscale("log")
            ax.set_xlim(0, 1)
            ax.set_title(f"{task}: {experiment}")
            ax.set_xlabel(r"signal efficiency $\varepsilon_S$")
            ax.set_ylabel(r"background rejection $1/\varepsilon_B$")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
    return _save(fig, path)


def plot_differences(report, path: Path) -> Path:
    """Every paired difference with its 95 % interval: what the verdicts say, at a glance."""
    rows = report.differences
    fig, axes = _grid(1, 1, "paired AUC differences, 95 % confidence intervals")
    fig.set_size_inches(9, 1.2 + 0.26 * len(rows))
    ax = axes[0][0]
    y = np.arange(len(rows))[::-1]
    colours = ["tab:blue" if d.comparison[1] == "local" else "tab:green" for d in rows]
    for yi, d, colour in zip(y, rows, colours):
        ax.errorbar(d.estimate.mean, yi, xerr=[[d.estimate.mean - d.estimate.low], [d.estimate.high - d.estimate.mean]],
                    fmt="o", color=colour, capsize=2, markersize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, [f"{d.scenario} {d.task} {d.experiment} {d.labelled_events:,}: {d.comparison[0]}−{d.comparison[1]}"
                      for d in rows], fontsize=6)
    ax.set_xlabel("AUC difference")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def plot_loss_per_round(report, path: Path) -> Path:
    """Pre-training validation loss per round of the largest setups (mean over seeds ± SE)."""
    fig, axes = _grid(1, 1, "pre-training validation loss per round\n(largest setups, ±1 SE over seeds)")
    fig.set_size_inches(7, 4.6)
    ax = axes[0][0]
    largest = max((sum(n for _, n in r.setup.events) / len(r.setup.events) for r in report.pretrains.values()),
                  default=0)
    groups: dict[str, list] = {}
    for record in report.pretrains.values():
        events = dict(record.setup.events)
        if record.loss_history and sum(events.values()) / len(events) == largest:
            name = record.setup.method + ("" if record.setup.method != "local" else f": {next(iter(events))} only")
            groups.setdefault(name, []).append(record.loss_history)
    styles = iter(["--", ":", "-.", (0, (5, 1))] * 5)
    for name, histories in sorted(groups.items()):
        length = min(len(h) for h in histories)
        values = np.array([[loss for _, loss in h[:length]] for h in histories])
        rounds = [r for r, _ in histories[0][:length]]
        mean = values.mean(0)
        se = values.std(0, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.zeros(length)
        colour, _ = _style(name.split(":")[0])
        ax.plot(rounds, mean, marker=".", color=colour, label=name, linestyle="-" if ":" not in name else next(styles))
        ax.fill_between(rounds, mean - se, mean + se, color=colour, alpha=0.2, linewidth=0)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("round")
    ax.set_ylabel("validation loss of the global model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def draw_all(report, out_dir: Path) -> list[Path]:
    drawn = []
    for scenario in report.scenarios:
        if scenario.kind != "scaling":
            drawn.append(plot_auc_vs_labelled(report, scenario, out_dir / f"auc_vs_labelled_{scenario.name}.png"))
            drawn.append(plot_roc(report, scenario, out_dir / f"roc_{scenario.name}.png"))
    scaling = [s for s in report.scenarios if s.kind == "scaling"]
    if scaling:
        drawn.append(plot_scaling(report, scaling, out_dir / "scaling.png"))
    if report.differences:
        drawn.append(plot_differences(report, out_dir / "differences.png"))
    if any(r.loss_history for r in report.pretrains.values()):
        drawn.append(plot_loss_per_round(report, out_dir / "loss_per_round.png"))
    return drawn
