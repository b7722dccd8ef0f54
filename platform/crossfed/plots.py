"""The demo's figures, drawn with matplotlib's Agg backend (no display needed).

Each function takes plain result records (see `crossfed.report`) and writes one PNG; they are shared
by `crossfed demo` and `crossfed report`, so both draw the same figures from the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)
import numpy as np  # noqa: E402

# One colour and label per pre-training method, in the order they appear in legends and tables.
METHOD_STYLE = {
    "federated": ("tab:red", "federated (all experiments)"),
    "local": ("tab:blue", "local (own experiment only)"),
    "centralized": ("tab:green", "centralized (data pooled)"),
    "scratch": ("tab:gray", "no pre-training"),
}


def _style(method: str) -> tuple[str, str]:
    return METHOD_STYLE.get(method, (None, method))


def _panels(n: int, title: str):
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.2), squeeze=False)
    fig.suptitle(title)
    return fig, axes[0]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_roc_curves(results: list, experiments: list[str], labelled_events: int, path: Path) -> Path:
    """Background rejection against signal efficiency, one panel per experiment, one curve per method."""
    fig, axes = _panels(len(experiments), f"ttH vs tt: ROC with {labelled_events} labelled events")
    for ax, experiment in zip(axes, experiments):
        for r in results:
            if r.experiment != experiment or r.labelled_events != labelled_events or r.roc is None:
                continue
            fpr, tpr = np.asarray(r.roc["fpr"]), np.asarray(r.roc["tpr"])
            keep = fpr > 0  # rejection 1/eps_B is infinite where no background passes
            colour, label = _style(r.method)
            ax.plot(tpr[keep], 1.0 / fpr[keep], color=colour, label=f"{label} (AUC {r.auc:.3f})")
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_xlabel(r"signal efficiency $\varepsilon_S$")
        ax.set_ylabel(r"background rejection $1/\varepsilon_B$")
        ax.set_title(experiment)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_auc_vs_labelled(results: list, experiments: list[str], path: Path) -> Path:
    """Data efficiency: AUC against the number of labelled events (log x), one line per method."""
    fig, axes = _panels(len(experiments), "ttH vs tt: AUC against labelled events")
    methods = list(dict.fromkeys(r.method for r in results))
    for ax, experiment in zip(axes, experiments):
        for method in methods:
            points = sorted((r.labelled_events, r.auc) for r in results if r.experiment == experiment and r.method == method)
            if not points:
                continue
            colour, label = _style(method)
            ax.plot(*zip(*points), marker="o", color=colour, label=label)
        ax.set_xscale("log")
        sizes = sorted({r.labelled_events for r in results})
        ax.set_xticks(sizes, [str(n) for n in sizes])  # the ladder itself, not 4x10^1
        ax.minorticks_off()
        ax.set_xlabel("labelled events for fine-tuning")
        ax.set_ylabel("ROC AUC (held-out events)")
        ax.set_title(experiment)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_loss_per_round(histories: dict[str, list[tuple[int, float]]], path: Path) -> Path:
    """Pre-training loss per aggregation round: federated against local and centralized training."""
    fig, axes = _panels(1, "self-supervised pre-training loss per round")
    ax = axes[0]
    local_styles = iter(["--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1))] * 10)  # one dash pattern per local run
    for name, points in histories.items():
        if not points:
            continue
        method, _, experiment = name.partition("/")
        colour, label = _style(method)
        steps, losses = zip(*sorted(points))
        ax.plot(steps, losses, marker=".", color=colour, linestyle=next(local_styles) if experiment else "-",
                label=f"local: {experiment} only" if experiment else label)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("round")
    ax.set_ylabel("validation loss of the global model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
