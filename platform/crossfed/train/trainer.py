"""One rank of one client: a DeepSpeed engine pre-training the foundation model on its experiments' events.

Local and federated clients hold one experiment; the centralized baseline holds all of them and cycles
through the experiments micro-batch by micro-batch, each through its own input adapter. Every rank holds
its shard of the training events; all ranks do the same number of forward passes (ZeRO-3 gathers
parameters collectively in forward).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crossfed.config import RunConfig
from crossfed.data.augment import augment
from crossfed.data.events import EventBatch
from crossfed.errors import CrossfedError
from crossfed.train.deepspeed_config import deepspeed_config, make_optimizer, make_scheduler, micro_batch_size
from crossfed.train.workers import free_port

CHECKPOINT_TAG = "client"


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CrossfedError("training.device is 'cuda' but no CUDA device is visible")
    return device


def import_deepspeed():
    """`import deepspeed`, without the MLflow import its autotuner (unused here) tries when MLflow is
    installed: a second of every rank's start-up. A `None` in `sys.modules` makes that `import mlflow`
    raise ImportError, which DeepSpeed catches; it is removed at once, so MLflow imports normally later."""
    if "deepspeed" in sys.modules or "mlflow" in sys.modules:
        import deepspeed

        return deepspeed
    sys.modules["mlflow"] = None
    try:
        import deepspeed
    finally:
        del sys.modules["mlflow"]
    return deepspeed


def init_distributed(rank: int, world_size: int, device: str) -> None:
    """Join the process group described by MASTER_ADDR/PORT, RANK, WORLD_SIZE (a lone rank makes its own)."""
    if device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # must be set before deepspeed picks its accelerator
    else:  # a node's workers share CUDA_VISIBLE_DEVICES (workers.py): "cuda" is then this rank's device
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if torch.distributed.is_initialized():
        return
    if world_size == 1 and "MASTER_PORT" not in os.environ:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=os.environ.get("LOCAL_RANK", "0"))
    deepspeed = import_deepspeed()
    if device == "cpu":
        # DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce op (about a minute on a fresh node,
        # every fresh pod and CI machine) that only `inference_all_reduce` uses; training never calls it.
        # The op table is cached in its module on first access, so this edit holds for the process.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo", auto_mpi_discovery=False,
                               verbose=False)


class PretrainingObjective(nn.Module):
    """The model plus its pre-training tasks, so one DeepSpeed forward computes the whole loss.

    The FedProx proximal term is computed inside this forward too: at ZeRO-3 the shared parameters are
    registered as external parameters of this module, so they are gathered for it.
    """

    def __init__(self, model: nn.Module, tasks: list):
        super().__init__()
        self.model = model
        self.tasks = tasks  # (Task, weight); tasks hold no parameters of their own (heads live in the model)

    def forward(self, features, types, mask, experiment: str, generator: torch.Generator,
                proximal: tuple[float, list[tuple[nn.Parameter, torch.Tensor]]] | None = None):
        from crossfed.tasks import pretraining_loss

        # Metrics stay device tensors (no host sync per step); the caller converts them once.
        loss, metrics = pretraining_loss(self.model, self.tasks, features, types, mask, experiment, generator,
                                         sync=False)
        if proximal is not None:
            mu, pairs = proximal
            distance = sum(((p.float() - anchor) ** 2).sum() for p, anchor in pairs)
            loss = loss + 0.5 * mu * distance
            metrics["proximal"] = (0.5 * mu * distance).detach()
        return loss, metrics


class BatchCursor:
    """Walks a shard of event indices in a fresh random order each epoch; its state is checkpointed."""

    def __init__(self, indices: np.ndarray, seed: int):
        self.indices = indices
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(indices)
        self.position = 0

    def next(self, size: int) -> np.ndarray:
        taken = []
        while size > 0:
            if self.position == len(self.order):
                self.order, self.position = self.rng.permutation(self.indices), 0
            chunk = self.order[self.position:self.position + size]
            self.position += len(chunk)
            size -= len(chunk)
            taken.append(chunk)
        return np.concatenate(taken)

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "order": self.order.copy(), "position": self.position}

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order, self.position = np.asarray(state["order"]), int(state["position"])


class EventTensors:
    """One experiment's events as torch tensors, where training batches are gathered from.

    On a GPU they are kept in device memory when they take at most a quarter of what is free, so a batch
    is a gather on the device, with no host-to-device copy per step; otherwise (and on CPU, without a
    copy of the arrays) they stay in host memory and each batch is copied over.
    """

    def __init__(self, events: EventBatch, device: str):
        self.device = device
        arrays = (events.features, events.types, events.mask)
        fits = device != "cpu" and sum(a.nbytes for a in arrays) <= torch.cuda.mem_get_info(device)[0] // 4
        self.home = device if fits else "cpu"
        self.features, self.types, self.mask = (torch.from_numpy(np.ascontiguousarray(a)).to(self.home) for a in arrays)

    def take(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features float32, types int64, mask bool) of these events, on the training device."""
        rows = torch.from_numpy(np.asarray(index, np.int64)).to(self.home)
        return tuple(t.index_select(0, rows).to(self.device, non_blocking=True)
                     for t in (self.features, self.types, self.mask))


def load_pretraining_events(config: RunConfig, experiment: str) -> EventBatch:
    from crossfed.data import load_dataset

    experiment_config = config.experiments[experiment]
    if experiment_config.pretrain is None:
        raise CrossfedError(f"experiments.{experiment}.pretrain: no pre-training dataset configured")
    return load_dataset(experiment_config.pretrain, experiment_config.data_schema, config.data)


class LocalTrainer:
    def __init__(self, config: RunConfig, experiments: list[str], *, rank: int = 0, world_size: int = 1,
                 data: dict[str, EventBatch] | None = None, total_steps: int | None = None):
        """`total_steps` is the length of the LR schedule (default training.steps; federation passes
        rounds × local_steps)."""
        from crossfed.data import split_indices, shard
        from crossfed.model import build_model
        from crossfed.tasks import build_tasks

        unknown = [e for e in experiments if e not in config.experiments]
        if not experiments or unknown:
            raise CrossfedError(f"LocalTrainer: unknown experiment(s) {unknown}; configured: {list(config.experiments)}")
        self.config, self.experiments = config, list(experiments)
        # Error messages name the data: one client's experiment, or all of them for centralized training.
        self._where = ("experiment " if len(self.experiments) == 1 else "experiments ") + ", ".join(self.experiments)
        self.rank, self.world_size = rank, world_size
        training = config.training
        self.device = resolve_device(training.device)
        init_distributed(rank, world_size, self.device)
        self.micro_batch = micro_batch_size(training, world_size)

        self.events, self.cursors, self.validation = {}, {}, {}
        self.num_train_events = 0
        for index, name in enumerate(self.experiments):
            events = data[name] if data is not None and name in data else load_pretraining_events(config, name)
            train, validation, _ = split_indices(len(events), config.data.validation_fraction,
                                                 config.data.test_fraction, config.data.split_seed)
            mine = shard(train, rank, world_size)
            if len(mine) == 0:
                raise CrossfedError(f"experiment {name}: {len(train)} training events cannot feed {world_size} workers")
            self.events[name] = EventTensors(events, self.device)
            self.cursors[name] = BatchCursor(mine, seed=config.seed * 1000 + rank * 31 + index)
            self.validation[name] = validation
            self.num_train_events += len(train)

        torch.manual_seed(config.seed)  # identical initial weights on every rank and every client
        self.tasks = build_tasks(training.tasks)
        self.model = build_model(config.model, self.experiments, [task.name for task, _ in self.tasks],
                                 common_adapter=config.federation.common_adapter)
        self.objective = PretrainingObjective(self.model, self.tasks)
        self.engine = self._build_engine(total_steps or training.steps)
        self.model = self.engine.module.model  # the same parameters, as DeepSpeed converted them
        self._normalise_across_ranks()
        self.generator = torch.Generator().manual_seed(config.seed * 7919 + rank)
        self.micro_steps = 0
        self.global_shared: dict[str, torch.Tensor] = {}
        self.uploader = None  # the thread that puts checkpoint snapshots into the run storage
        self.upload = None  # (location, Future of its files) of the snapshot being put there

    def _build_engine(self, total_steps: int):
        deepspeed = import_deepspeed()
        training = self.config.training
        self.objective.to(self.device)
        self.proximal_ready = training.zero_stage < 3 or self.config.federation.strategy.name == "fedprox"
        if training.zero_stage == 3 and self.proximal_ready:
            # The proximal term needs whole parameters (any group may be shared), so they are gathered for the
            # whole forward: that memory is only paid when FedProx is configured.
            for param in self.model.parameters():
                deepspeed.zero.register_external_parameter(self.objective, param)
        engine, _, _, _ = deepspeed.initialize(
            model=self.objective,
            model_parameters=[p for p in self.objective.parameters() if p.requires_grad],
            optimizer=make_optimizer(training),
            lr_scheduler=make_scheduler(training, total_steps),
            config=deepspeed_config(training, self.world_size),
        )
        if self.world_size == 1 and training.zero_stage == 0:
            # One rank averages its gradients with itself: DeepSpeed's own switch (it sets it when there is no
            # backend) skips the flatten, all-reduce and copy back, ~1 ms a step (GPU steps take a few ms).
            engine.enable_backward_allreduce = False
        return engine

    def _normalise_across_ranks(self) -> None:
        """Several ranks: the adapters' running statistics from every rank's batch, the same on all ranks
        (else each rank drifts on its own shard, and a checkpoint keeps only one rank's copy)."""
        from crossfed.model.adapters import RunningNormaliser

        for module in self.model.modules():
            if isinstance(module, RunningNormaliser):
                module.across_ranks = self.world_size > 1

    # ---- batches -------------------------------------------------------------------------------------

    def _batch(self, experiment: str, index: np.ndarray):
        """(features in the model's dtype, types int64, mask) of these events of `experiment`, on the device."""
        features, types, mask = self.events[experiment].take(index)
        return features.to(next(self.model.parameters()).dtype), types.long(), mask

    def _training_batch(self, experiment: str):
        features, types, mask = self.events[experiment].take(self.cursors[experiment].next(self.micro_batch))
        # On the device; only the per-event random draws come from the CPU generator (one [B, 1] copy each).
        features = augment(features, types, mask, self.config.data.augment, self.generator)
        return features.to(next(self.model.parameters()).dtype), types.long(), mask

    # ---- training ------------------------------------------------------------------------------------

    def train(self, steps: int, proximal_mu: float = 0.0) -> dict:
        """`steps` optimizer steps; returns mean loss and metrics, num_examples (the client's training events)."""
        if proximal_mu > 0 and not self.global_shared:
            raise RuntimeError("proximal_mu > 0 needs a global state: call load_shared_state first")
        if proximal_mu > 0 and not self.proximal_ready:
            raise CrossfedError("proximal_mu > 0 at ZeRO-3 needs federation.strategy.name: fedprox")
        proximal = None
        if proximal_mu > 0:
            params = dict(self.model.named_parameters())
            proximal = (proximal_mu, [(params[name], anchor) for name, anchor in self.global_shared.items()])
        self.engine.train()
        sums: dict[str, torch.Tensor] = {}
        passes = steps * self.config.training.grad_accum
        batches = dict.fromkeys(self.experiments, 0)  # micro-batches per experiment: what each one's data gave
        for _ in range(passes):
            experiment = self.experiments[self.micro_steps % len(self.experiments)]
            batches[experiment] += 1
            features, types, mask = self._training_batch(experiment)
            loss, metrics = self.engine(features, types, mask, experiment, self.generator, proximal)
            self.engine.backward(loss)
            self.engine.step()
            self.micro_steps += 1
            for key, value in {**metrics, "loss": loss.detach()}.items():
                sums[key] = sums.get(key, 0.0) + value.float()
        result = _all_ranks_mean({key: float(value) / passes for key, value in sums.items()})
        if not np.isfinite(result["loss"]):
            raise CrossfedError(f"{self._where}: training loss is {result['loss']} at step "
                                f"{self.engine.global_steps} (lower training.lr or check the inputs for NaN)")
        events = self.micro_batch * self.world_size
        result.update(num_examples=self.num_train_events, events_processed=passes * events,
                      lr=self.engine.get_lr()[0], global_step=self.engine.global_steps,
                      **{f"events_processed/{name}": count * events for name, count in batches.items()})
        return result

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Validation loss and task metrics: no augmentation, a fixed corruption seed, same result every call."""
        self.engine.eval()
        generator = torch.Generator().manual_seed(12345)
        sums, batches = {}, 0
        for experiment in self.experiments:
            validation = self.validation[experiment]
            per_rank = len(validation) // self.world_size  # equal forward passes on every rank (ZeRO-3)
            mine = validation[self.rank * per_rank:(self.rank + 1) * per_rank]
            n_batches = min(self.config.training.eval_batches, -(-len(mine) // self.micro_batch))
            for b in range(n_batches):
                index = mine[b * self.micro_batch:(b + 1) * self.micro_batch]
                loss, metrics = self.engine(*self._batch(experiment, index), experiment, generator)
                for key, value in {**metrics, "loss": loss}.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                batches += 1
        if batches == 0:
            raise CrossfedError(f"{self._where}: the validation split is empty "
                                "(raise data.validation_fraction or use more events)")
        result = _all_ranks_mean({key: value / batches for key, value in sums.items()})
        result["num_examples"] = sum(len(self.validation[e]) for e in self.experiments)
        return result

    # ---- shared parameters ---------------------------------------------------------------------------

    def _named_parameters(self, groups: list[str]) -> list[tuple[str, nn.Parameter]]:
        from crossfed.model import parameter_group

        return [(name, p) for name, p in self.model.named_parameters() if parameter_group(name) in groups]

    def shared_state(self, groups: list[str]) -> dict[str, np.ndarray]:
        """Full float32 copies of the parameters in `groups` (collective)."""
        from crossfed.train.shared_state import read_parameters

        return read_parameters(self.engine, self._named_parameters(groups))

    def load_shared_state(self, state: dict[str, np.ndarray]) -> None:
        """Write these parameters (working and master copies; collective) and keep them as the FedProx anchor."""
        from crossfed.train.shared_state import write_parameters

        params = dict(self.model.named_parameters())
        unknown = sorted(set(state) - set(params))
        if unknown:
            raise ValueError(f"load_shared_state: the model has no parameter(s) {unknown[:5]}")
        write_parameters(self.engine, [(name, params[name]) for name in state], state)
        self.global_shared = {name: torch.as_tensor(np.asarray(value, np.float32), device=self.device)
                              for name, value in state.items()}

    # ---- checkpoints ---------------------------------------------------------------------------------

    def save_checkpoint(self, directory: str | Path) -> None:
        """This rank's part of the full client state into a local folder (collective): DeepSpeed's files
        (model states at rank 0 below ZeRO-3, each rank's optimizer partition) and this rank's trainer
        state. Ranks may share the folder or each have their own (`snapshot_checkpoint`)."""
        directory = Path(directory)
        (directory / CHECKPOINT_TAG).mkdir(parents=True, exist_ok=True)
        # Per-rank state (data cursor, RNGs): DeepSpeed's client_state is only written by data-parallel rank 0.
        rank_state = {
            "micro_steps": self.micro_steps,
            "cursors": {name: cursor.state() for name, cursor in self.cursors.items()},
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "global_shared": {name: t.cpu() for name, t in self.global_shared.items()},
        }
        self.engine.save_checkpoint(str(directory), tag=CHECKPOINT_TAG)
        torch.save(rank_state, directory / CHECKPOINT_TAG / f"rank_{self.rank}_trainer_state.pt")

    def load_checkpoint(self, directory: str | Path) -> None:
        """Load a full client state from a local folder holding every rank's files (collective)."""
        directory = Path(directory)
        rank_file = directory / CHECKPOINT_TAG / f"rank_{self.rank}_trainer_state.pt"
        if not rank_file.is_file():
            raise CrossfedError(f"{directory}: not a crossfed client checkpoint of {self.world_size} worker(s) "
                                f"(no {rank_file.relative_to(directory)})")
        path, _ = self.engine.load_checkpoint(str(directory), tag=CHECKPOINT_TAG)
        if path is None:
            raise CrossfedError(f"{directory}: the checkpoint could not be loaded")
        rank_state = torch.load(rank_file, weights_only=False)  # our own file: numpy RNG states inside
        self.micro_steps = rank_state["micro_steps"]
        for name, cursor_state in rank_state["cursors"].items():
            self.cursors[name].restore(cursor_state)
        self.generator.set_state(rank_state["generator"])
        torch.set_rng_state(rank_state["torch_rng"])
        self.global_shared = {name: t.to(self.device) for name, t in rank_state["global_shared"].items()}

    def snapshot_checkpoint(self, location: str) -> None:
        """Save this rank's part into a private local folder now (collective: the state as it is at this
        call), then put its files at `location` in the run storage in a background thread, while training
        goes on; `uploaded_checkpoint` waits for them. Every rank writes its own shard, no disk is shared."""
        from concurrent.futures import ThreadPoolExecutor

        local = tempfile.mkdtemp(prefix="crossfed-checkpoint-")
        try:
            self.save_checkpoint(local)
        except BaseException:
            shutil.rmtree(local, ignore_errors=True)
            raise
        if self.uploader is None:
            self.uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-upload")
        self.upload = (location, self.uploader.submit(_upload_and_remove, Path(local), location))

    def uploaded_checkpoint(self, location: str) -> dict | None:
        """{file: FileEntry} of the snapshot put at `location`, once all of it is there; None if this rank
        took none (it is a new one: the rank that took it died)."""
        pending, self.upload = self.upload, None
        if pending is None or pending[0] != location:
            return None
        return pending[1].result()

    def download_checkpoint(self, location: str, files: dict) -> None:
        """Fetch a client checkpoint's `files` ({name: FileEntry}, every rank's) from the run storage,
        each checked against its checksum, and load it (collective)."""
        from crossfed.storage import Storage

        with tempfile.TemporaryDirectory(prefix="crossfed-checkpoint-") as local:
            Storage(location).download_verified(files, Path(local))
            self.load_checkpoint(local)

    def model_state(self) -> dict[str, np.ndarray]:
        """Every parameter as full float32 plus the buffers (adapter normalisers; collective): what
        fine-tuning and model export start from."""
        state = self.shared_state(["adapter", "backbone", "heads"])
        state.update({name: b.detach().cpu().numpy().copy() for name, b in self.model.named_buffers()})
        return state

    @torch.no_grad()
    def encode(self, features: np.ndarray, types: np.ndarray, mask: np.ndarray, experiment: str) -> np.ndarray:
        """Output tokens of the working parameters on a few given events, in eval mode (collective at ZeRO-3)."""
        self.engine.eval()
        dtype = next(self.model.parameters()).dtype
        features, types, mask = (torch.as_tensor(np.asarray(a), device=self.device) for a in (features, types, mask))
        return self.model.encode(features.to(dtype), types.long(), mask, experiment).float().cpu().numpy()


def _all_ranks_mean(values: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over the ranks of the group (every rank gets the same numbers)."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return values
    keys = sorted(values)
    on_gpu = torch.distributed.get_backend() == "nccl"
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device="cuda" if on_gpu else "cpu")
    torch.distributed.all_reduce(tensor)
    return dict(zip(keys, (tensor / torch.distributed.get_world_size()).tolist()))


def _upload_and_remove(local: Path, location: str) -> dict:
    """Put a local checkpoint folder at `location` in the run storage, then delete it; {file: FileEntry}."""
    from crossfed.storage import Storage

    try:
        return Storage(location).upload_folder(local)
    finally:
        shutil.rmtree(local, ignore_errors=True)
