"""Fine-tuning: signal vs background (ttH vs tt̄) on a given number of labelled events.

The pre-trained backbone and the experiment's adapter are loaded into a classifier, trained on a balanced
subset of the labelled training split (the data-efficiency ladder: 10^2 ... 10^5 events) and scored on the
test split, which never overlaps the training events. Small, so one process and plain torch.

Modes (`finetune.mode`): `full` trains everything, `lower_lr` the backbone at a lower rate, `frozen` only
the classifier on the pre-trained encoder's (adapter + backbone) pooled output. A frozen encoder gives
every event the same representation in every fine-tuning, so `encode_events` computes it once and many
fine-tunings (seeds, ladder points) reuse it through `features=`.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from crossfed.config import RunConfig
from crossfed.data.events import EventBatch
from crossfed.errors import CrossfedError
from crossfed.train.metrics import classification_metrics, roc_curve
from crossfed.train.trainer import resolve_device


class FinetuneMetrics(dict):
    """Scalar metrics (auc, rejection_at_0.3, rejection_at_0.5, accuracy, ...) with the ROC curve as
    `.fpr` / `.tpr` arrays and the test events' `.scores` and `.labels`, kept out of the dict so the dict
    can be logged as it is; with `keep_model`, the trained classifier's full state as `.model_state`."""

    model_state: dict[str, np.ndarray] | None = None
    fpr: np.ndarray
    tpr: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def load_labelled_events(config: RunConfig, experiment: str) -> EventBatch:
    """Signal (label 1) and background (label 0) events of the experiment's `finetune` datasets."""
    from crossfed.data import load_dataset

    if experiment not in config.experiments:
        raise CrossfedError(f"unknown experiment {experiment!r}; configured: {', '.join(config.experiments)}")
    settings = config.experiments[experiment]
    if settings.finetune is None:
        raise CrossfedError(f"experiments.{experiment}.finetune: no signal/background datasets configured")
    signal = load_dataset(settings.finetune.signal, settings.data_schema, config.data).with_labels(1)
    background = load_dataset(settings.finetune.background, settings.data_schema, config.data).with_labels(0)
    return EventBatch.concat([signal, background])


def read_state(source: str | Path | dict) -> dict[str, torch.Tensor]:
    """A model state from a dict or a file (torch .pt/.pth or numpy .npz) as float tensors."""
    if not isinstance(source, dict):
        path = Path(source)
        if not path.is_file():
            raise CrossfedError(f"{path}: no such checkpoint file")
        try:
            if path.suffix == ".npz":
                with np.load(path) as arrays:
                    source = {name: arrays[name] for name in arrays.files}
            else:
                source = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise CrossfedError(f"{path}: not a readable model state ({type(err).__name__}: {err})") from None
        if not isinstance(source, dict):
            raise CrossfedError(f"{path}: expected a mapping of parameter names to tensors")
    return {name.removeprefix("module.").removeprefix("model."): torch.as_tensor(np.asarray(value))
            for name, value in source.items()}


def load_pretrained(model, state: dict[str, torch.Tensor], experiment: str, where: str) -> None:
    """Copy backbone and this experiment's adapter (its own, or the common one) into `model`; pre-training
    heads are not needed."""
    own = model.state_dict()
    adapter = f"adapters.{model.adapter_name(experiment)}."
    wanted = [name for name in own if name.startswith(("backbone.", adapter))]
    missing_backbone = [n for n in wanted if n.startswith("backbone.") and n not in state]
    if missing_backbone:
        raise CrossfedError(f"{where}: no backbone parameters such as {missing_backbone[0]!r} "
                            "(is it a crossfed model state?)")
    if not any(n in state for n in wanted if n.startswith("adapters.")):
        warnings.warn(f"{where}: no adapter for {experiment!r}; its adapter starts untrained", stacklevel=3)
    for name in wanted:
        if name not in state:
            continue
        if tuple(state[name].shape) != tuple(own[name].shape):
            raise CrossfedError(f"{where}: {name} has shape {tuple(state[name].shape)}, the configured model "
                                f"{tuple(own[name].shape)} (model settings differ from pre-training)")
        own[name] = state[name].to(own[name].dtype)
    model.load_state_dict(own)


def balanced_subset(labels: np.ndarray, candidates: np.ndarray, count: int, seed: int, experiment: str) -> np.ndarray:
    """`count` events from `candidates`, half signal and half background, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    per_class = [count - count // 2, count // 2]  # signal gets the odd one
    chosen = []
    for label, wanted in zip((1, 0), per_class):
        pool = candidates[labels[candidates] == label]
        if len(pool) < wanted:
            raise CrossfedError(
                f"experiment {experiment}: {count} labelled events need {wanted} "
                f"{'signal' if label else 'background'} events, the training split has {len(pool)}")
        chosen.append(rng.choice(pool, size=wanted, replace=False))
    return rng.permutation(np.concatenate(chosen))


def _optimizer(model, config: RunConfig):
    """`model`: the whole classifier model, or in frozen mode the classifier head alone."""
    settings = config.finetune
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    factor = settings.backbone_lr_factor if settings.mode == "lower_lr" else 1.0
    groups = [{"params": rest, "lr": settings.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": settings.lr * factor})
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=settings.lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=settings.lr)


@torch.no_grad()
def _scores(forward, module, indices: np.ndarray, batch_size: int) -> np.ndarray:
    """Signal probabilities of the events at `indices`; `forward(indices)` gives their logits."""
    module.eval()
    scores = [torch.softmax(forward(indices[start:start + batch_size]).float(), dim=1)[:, 1].cpu().numpy()
              for start in range(0, len(indices), batch_size)]
    return np.concatenate(scores) if scores else np.zeros(0)


def _tensors(events: EventBatch, device: str):
    return (torch.as_tensor(events.features, device=device),
            torch.as_tensor(events.types.astype(np.int64), device=device),
            torch.as_tensor(events.mask, device=device))


def _encoder(config: RunConfig, experiment: str, pretrained_state, device: str):
    """The model (adapter + backbone, no classifier yet) with the pre-trained state loaded, if any: its
    `backbone.*` and `adapters.<experiment>.*` (`adapters.common.*` when the config shares the adapter)."""
    from crossfed.model import build_model

    model = build_model(config.model, [experiment], tasks=[], common_adapter=config.federation.common_adapter)
    if pretrained_state is not None:
        where = str(pretrained_state) if not isinstance(pretrained_state, dict) else "pre-trained state"
        load_pretrained(model, read_state(pretrained_state), experiment, where)
    return model.to(device)


@torch.no_grad()
def encode_events(config: RunConfig, experiment: str, pretrained_state: str | Path | dict | None,
                  events: EventBatch) -> np.ndarray:
    """The encoder's pooled output for every event [N, dim] (float32): what a frozen-mode classifier sees.
    None as the state encodes with a random encoder initialised from config.seed."""
    device = resolve_device(config.training.device)
    torch.manual_seed(config.seed)
    model = _encoder(config, experiment, pretrained_state, device).eval()
    pooled = []
    for start in range(0, len(events), config.finetune.batch_size):
        features, types, mask = _tensors(events.take(slice(start, start + config.finetune.batch_size)), device)
        pooled.append(model.pool(model.encode(features, types, mask, experiment), mask).float().cpu().numpy())
    return np.concatenate(pooled) if pooled else np.zeros((0, model.dim), np.float32)


def _classifier_model(config: RunConfig, experiment: str, pretrained_state, events: EventBatch,
                      features: np.ndarray | None, device: str):
    """(module to train, forward(indices) -> logits). Frozen: a classifier head on the encoder's pooled
    output `features`; else the whole model with a classifier attached."""
    from crossfed.model import classifier_head, model_sizes

    if config.finetune.mode == "frozen":
        if len(features) != len(events):
            raise CrossfedError(f"experiment {experiment}: {len(features)} encoded events for {len(events)} events")
        head = classifier_head(model_sizes(config.model)["dim"], 2).to(device)
        encoded = torch.as_tensor(np.asarray(features, np.float32), device=device)
        return head, lambda indices: head(encoded[torch.as_tensor(indices, device=device)])
    model = _encoder(config, experiment, pretrained_state, device)
    model.add_classifier(2)
    return model, lambda indices: model.classify(*_tensors(events.take(indices), device), experiment)


def finetune(config: RunConfig, experiment: str, labelled_events: int,
             pretrained_state: str | Path | dict | None = None, *, data: EventBatch | None = None,
             seed: int | None = None, features: np.ndarray | None = None,
             on_epoch: Callable[[int, dict[str, float]], None] | None = None,
             keep_model: bool = False) -> FinetuneMetrics:
    """Train a classifier on `labelled_events` balanced events and score it on the held-out test split.

    `pretrained_state`: a state dict (or .pt/.npz file) holding `backbone.*` and `adapters.<experiment>.*`;
    None trains from scratch. `data`: labelled events (labels 1 = signal) instead of the config's datasets.
    `seed` (default config.seed): draws the labelled subset, initialises the classifier, orders the
    batches. `features`: in frozen mode, `encode_events` of `data` with this state (computed if not given).
    The best epoch on the validation split is kept. Returns test-set metrics, the ROC curve and the scores.
    `on_epoch(epoch, {"train_loss", "val_loss"})` is called after each epoch (1-based; train_loss: the
    epoch's mean batch loss), for logging. `keep_model`: also return the classifier's state (encoder and
    head, as `crossfed.serving.mlflow_model` logs it) as `.model_state`.
    """
    settings = config.finetune
    seed = config.seed if seed is None else seed
    events = data if data is not None else load_labelled_events(config, experiment)
    if events.labels is None:
        raise CrossfedError(f"experiment {experiment}: fine-tuning needs labelled events")
    train, validation, test = split_indices_checked(events, config, experiment)
    chosen = balanced_subset(events.labels, train, labelled_events, seed, experiment)

    device = resolve_device(config.training.device)
    if settings.mode == "frozen" and features is None:
        features = encode_events(config, experiment, pretrained_state, events)
    torch.manual_seed(seed)  # after encoding: the classifier's initial weights follow the fine-tuning seed
    module, forward = _classifier_model(config, experiment, pretrained_state, events, features, device)
    optimizer = _optimizer(module, config)
    validation_labels = events.labels[validation]
    batch_size = min(settings.batch_size, len(chosen))
    order_rng = np.random.default_rng(seed)
    max_steps = settings.max_steps or float("inf")
    best_loss, best_state, steps = float("inf"), None, 0
    for epoch in range(1, settings.epochs + 1):
        module.train()
        batch_losses = []
        order = chosen[order_rng.permutation(len(chosen))]
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            loss = F.cross_entropy(forward(batch).float(), torch.as_tensor(events.labels[batch], device=device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            batch_losses.append(loss.detach().item())
            steps += 1
            if steps >= max_steps:
                break
        if not torch.isfinite(loss):
            raise CrossfedError(f"experiment {experiment}: fine-tuning loss became {float(loss)} "
                                "(lower finetune.lr)")
        validation_loss = _validation_loss(forward, module, validation, validation_labels, settings.batch_size)
        if on_epoch is not None:
            on_epoch(epoch, {"train_loss": float(np.mean(batch_losses)), "val_loss": validation_loss})
        if validation_loss < best_loss:
            best_loss, best_state = validation_loss, copy.deepcopy(module.state_dict())
        if steps >= max_steps:
            break
    module.load_state_dict(best_state)

    scores = _scores(forward, module, test, settings.batch_size)
    labels = events.labels[test]
    result = FinetuneMetrics(classification_metrics(labels, scores))
    result.fpr, result.tpr, _ = roc_curve(labels, scores)
    result.scores, result.labels = scores, labels
    result.update(labelled_events=labelled_events, test_events=len(test), validation_loss=best_loss, steps=steps)
    if keep_model:
        result.model_state = _classifier_state(config, experiment, pretrained_state, module)
    return result


def _classifier_state(config: RunConfig, experiment: str, pretrained_state, module) -> dict[str, np.ndarray]:
    """The whole classifier's parameters: the trained model's, or in frozen mode the encoder it scored with
    (rebuilt as `encode_events` built it) and the trained head as `classifier.*`."""
    if config.finetune.mode != "frozen":
        return {name: value.detach().cpu().numpy() for name, value in module.state_dict().items()}
    torch.manual_seed(config.seed)
    encoder = _encoder(config, experiment, pretrained_state, "cpu")
    state = {name: value.numpy() for name, value in encoder.state_dict().items()}
    state.update({f"classifier.{name}": value.detach().cpu().numpy() for name, value in module.state_dict().items()})
    return state


@torch.no_grad()
def _validation_loss(forward, module, indices: np.ndarray, labels: np.ndarray, batch_size: int) -> float:
    """Mean cross-entropy of the events at `indices`, from the logits as in training (no clipped softmax)."""
    module.eval()
    total = 0.0
    for start in range(0, len(indices), batch_size):
        logits = forward(indices[start:start + batch_size]).float()
        target = torch.as_tensor(labels[start:start + batch_size], device=logits.device).long()
        total += F.cross_entropy(logits, target, reduction="sum").item()
    return total / max(len(indices), 1)


def split_indices_checked(events: EventBatch, config: RunConfig, experiment: str):
    """Train/validation/test split of the labelled events; validation and test must hold both classes."""
    from crossfed.data import split_indices

    train, validation, test = split_indices(len(events), config.data.validation_fraction,
                                            config.data.test_fraction, config.data.split_seed)
    for name, part in (("validation", validation), ("test", test)):
        if len(np.unique(events.labels[part])) < 2:
            raise CrossfedError(f"experiment {experiment}: the {name} split ({len(part)} events) lacks signal or "
                                f"background; use more events or a larger data.{name}_fraction")
    return train, validation, test
