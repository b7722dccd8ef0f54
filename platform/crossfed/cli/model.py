"""`crossfed model-info`: parameter counts per group and forward FLOPs per event of the model presets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("model-info")(model_info)


def model_info(
    preset: Optional[str] = typer.Option(None, "--preset", help="Only this preset (tiny, kishimoto-11m, large)."),
    config: Optional[Path] = typer.Option(
        None, "--config", help="Run configuration (YAML): show its model, experiments and tasks instead."
    ),
    objects: Optional[int] = typer.Option(
        None, "--objects", min=1, help="Objects per event for the FLOPs estimate [default: data.max_objects, 16]."
    ),
) -> None:
    """Parameter counts (adapter, backbone, heads, classifier, total) and forward FLOPs per event.

    Without options: every preset, for one experiment and the default replaced-object task. Models are
    built on PyTorch's meta device, so even the large preset costs no memory.
    """
    import torch
    from rich.console import Console
    from rich.table import Table

    from crossfed.config import ModelConfig, TrainingConfig, load_config
    from crossfed.errors import CrossfedError
    from crossfed.model import PRESETS, build_model, count_parameters, forward_flops_per_event, model_sizes

    if preset is not None and config is not None:
        raise CrossfedError("model-info: give --preset or --config, not both")
    if config is not None:
        run = load_config(config)
        models = [(f"{run.model.preset} ({config.name})", run.model)]
        experiments, tasks = list(run.experiments), list(run.training.tasks)
        common_adapter = run.federation.common_adapter
        objects = objects or run.data.max_objects
    else:
        if preset is not None and preset not in PRESETS:
            raise CrossfedError(f"--preset {preset!r}: unknown preset; known: {', '.join(PRESETS)}")
        models = [(name, ModelConfig(preset=name)) for name in ([preset] if preset else PRESETS)]
        experiments, tasks = ["experiment"], list(TrainingConfig().tasks)
        common_adapter = False
        objects = objects or 16

    table = Table(
        title=f"crossfed models — {len(experiments)} experiment(s), tasks: {', '.join(tasks)}",
        caption=f"parameters per group; MFLOPs: forward, one event of {objects} objects (training ≈ 3×)",
    )
    for column in ("model", "dim×depth", "adapter", "backbone", "heads", "classifier", "total", "MFLOPs"):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for label, model_cfg in models:
        sizes = model_sizes(model_cfg)
        with torch.device("meta"):
            model = build_model(model_cfg, experiments, tasks, common_adapter=common_adapter)
            model.add_classifier(num_classes=2)
        counts = [count_parameters(model, group) for group in ("adapter", "backbone", "heads", "classifier")]
        flops = forward_flops_per_event(model, objects)
        table.add_row(label, f"{sizes['dim']}×{sizes['depth']}",
                      *(f"{n:,}" for n in counts), f"{count_parameters(model):,}", f"{flops / 1e6:,.1f}")
    console = Console()
    console.width = max(console.width, 110)  # whole numbers, not ellipses, even in a narrow pipe
    console.print(table)
