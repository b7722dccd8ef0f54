"""One experiment's client: a tiny Ray actor that owns a DeepSpeed `WorkerGroup` on its node group.

Only shared parameters (the groups in `federation.shared`) and scalar metrics leave a client (under
central DP: the clipped shared update, and metrics only if `per_client_metrics`); private parameters,
optimizer state and events stay in its workers and its own checkpoints. It reads its experiment's data
only on its own nodes: the driver never opens it. The worker group stays alive across rounds (data,
engine, optimizer warm); if a worker dies the group is rebuilt from the client's last committed checkpoint
and the current global model. Which checkpoint that is the driver says with every call (its
`RecoveryState` is the one record of it).

Checkpoints go to the run storage (`clients/<name>/round_<k>/`, see `crossfed.federation.checkpoint`):
each rank puts its own files there from its own node, then the client writes the MANIFEST that lists
them with their checksums. A client deletes a checkpoint only when the driver says that no committed
round it keeps needs it (`prune`).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from crossfed.config import ClusterConfig, RunConfig
from crossfed.errors import CrossfedError, innermost_cause
from crossfed.federation import checkpoint, placement
from crossfed.federation.footprint import call_footprint
from crossfed.storage import DamagedFile, FileEntry, Storage

log = logging.getLogger(__name__)


def _is_worker_failure(err: BaseException) -> bool:
    """A rank that died or was killed (not a bug in the training code, which should propagate)."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError

    return isinstance(err, (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError))


def state_nbytes(state: dict[str, np.ndarray]) -> int:
    return int(sum(np.asarray(v).nbytes for v in state.values()))


def only_scalars(metrics: dict) -> dict[str, float]:
    """Keep the scalar metrics: nothing shaped like events may leave a client."""
    return {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0 and isinstance(v, (int, float, np.number))}


class FederationClient:
    """Ray actor (create with `client_actor_class()`): one experiment client, or the pooled baseline."""

    def __init__(self, config: RunConfig, name: str, experiments: list[str], cluster: ClusterConfig,
                 run_location: str | None, total_steps: int, placement_group=None):
        """`run_location`: the run's folder in the run storage (a path or URI); None while the run does not
        exist yet (the workers start meanwhile; `check_storage` gives it). `placement_group`: None to
        reserve this client's own group on its node group, or (group, first bundle index) to run inside a
        group the caller reserved."""
        # Set-up that can fail happens in `start`, so its error reaches the caller as the exception itself.
        self.config, self.name, self.experiments, self.cluster = config, name, experiments, cluster
        self.total_steps = total_steps  # the LR schedule spans the whole run, not one round
        self.run = self.store = None
        if run_location is not None:
            self._use_run(run_location)
        self.given_placement_group = placement_group
        self.placement_group, self.bundle_offset, self.workers = None, 0, None
        self.system_sampler = None  # a NodeSampler once `monitor_system` is called

    def _use_run(self, run_location: str) -> None:
        self.run = Storage(run_location)
        self.store = self.run.child(f"clients/{self.name}")

    def check_storage(self, run_location: str | None = None) -> None:
        """Before any training, from this client's node: check that the run storage is reachable from here
        (the driver has written the run's file there). `run_location`: the run's folder, when this client
        was started before the run existed."""
        if run_location is not None:
            self._use_run(run_location)
        if not self.run.exists(checkpoint.RUN_FILE):
            import ray

            raise CrossfedError(
                f"client {self.name!r} (node {ray.util.get_node_ip_address()}) cannot see the run storage "
                f"{self.run.location}: a local output_dir needs one machine or a disk every node mounts; "
                f"point output_dir or CROSSFED_STORAGE at shared storage such as s3://bucket/runs")

    def check_data(self) -> tuple[list[str], dict[str, dict]]:
        """`crossfed validate`'s data checks of this client's experiments, here at its site, while its workers
        start (`rounds.check_data_at_its_site`): the problems; when there are none, the data's records."""
        from crossfed.data.checks import check_experiment
        from crossfed.data.records import dataset_records

        experiments = self.config.experiments
        problems = [problem for name in self.experiments for problem in check_experiment(name, experiments[name])[0]]
        return problems, {} if problems else dataset_records(self.config, self.experiments)

    def start(self, run_key: str | None = None):
        """Reserve the workers' placement group (fails fast if the node group cannot host it), start them.
        Returns the group it reserved (None inside a caller's): Ray keeps a group until the job ends, so if
        this actor dies the driver removes it before starting the client's successor. `run_key` makes the
        group's name unique on the cluster (default: the run id, the last part of the run location)."""
        if self.given_placement_group is None:
            run_key = run_key or self.run.location.rstrip("/").rsplit("/", 1)[-1]
            self.placement_group = placement.create_worker_placement_group(self.cluster, self.name, run_key)
        else:
            self.placement_group, self.bundle_offset = self.given_placement_group
        self._start_workers()
        return self.placement_group if self.given_placement_group is None else None

    # -- worker group lifecycle ---------------------------------------------------------------------
    def _start_workers(self) -> None:
        from crossfed.train.workers import WorkerGroup

        self.workers = WorkerGroup(
            self.config,
            self.experiments,
            num_workers=self.cluster.workers,
            cpus_per_worker=self.cluster.cpus_per_worker,
            gpus_per_worker=self.cluster.gpus_per_worker,
            placement_group=self.placement_group,
            bundle_offset=self.bundle_offset,
            # no label_selector: the placement group's bundles already carry the node-group selector
            total_steps=self.total_steps,
        )

    def _restart_workers(self, checkpoint_round: int | None, global_state) -> None:
        """Replace a broken group: kill every rank (survivors may block in a collective), start anew,
        restore the client's last checkpoint and resynchronise from the global model."""
        self.workers.shutdown()
        self._start_workers()
        self.restore(checkpoint_round, global_state)

    def _call_ranks(self, method: str, *args, **kwargs) -> list:
        """Run a trainer method on every rank; a dead rank fails fast instead of leaving the others
        blocked in a collective (each rank's future is watched, not just the first)."""
        import ray

        refs = self.workers.call_async(method, *args, **kwargs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done[0])  # raises at once if that rank died
        return ray.get(refs)

    # -- federation protocol ------------------------------------------------------------------------
    def worker_node_ids(self) -> list[str]:
        """The node each rank runs on (as the rank's own Ray runtime context says), to check pinning."""
        import ray

        return [node for node, _ in ray.get([w.placement.remote() for w in self.workers.workers])]

    def node_ids(self) -> dict[str, object]:
        """Where this client runs: its own node and each rank's (the run records them, to check pinning)."""
        import ray

        return {"node": ray.get_runtime_context().get_node_id(), "worker_nodes": self.worker_node_ids()}

    def worker_actors(self) -> list:
        return list(self.workers.workers)

    def shared_state(self, groups: list[str]) -> dict[str, np.ndarray]:
        return self._call_ranks("shared_state", groups)[0]

    def fit(self, global_ref: list, groups: list[str], steps: int, proximal_mu: float,
            checkpoint_round: int | None, privacy: dict | None = None) -> dict:
        """Load the global model, train `steps` local steps, return the shared state and scalar metrics.

        `global_ref` is `[ObjectRef]`: wrapped so that this actor forwards the reference and each rank
        fetches the weights from the object store itself. `checkpoint_round`: the round of this client's
        last checkpoint, which a worker death rebuilds the group from. `privacy` (central DP):
        {"clip_norm": C, "metrics": bool}: the update is clipped to C here, so the unclipped one never
        leaves this site; without "metrics" no metric or example count is sent (placeholders: {} and 1).
        """
        started = time.perf_counter()
        try:
            self.workers.meter_start()
            self._call_ranks("load_shared_state", global_ref[0])
            per_rank = self._call_ranks("train", steps, proximal_mu=proximal_mu)
            state = self._call_ranks("shared_state", groups)[0]
            footprint = call_footprint(self.workers.meter_stop(), time.perf_counter() - started)
        except Exception as err:  # noqa: BLE001 - only worker deaths are handled, the rest re-raised
            if not _is_worker_failure(err):
                raise
            self._restart_workers(checkpoint_round, global_ref[0])
            return {"client": self.name, "failed": f"worker died: {type(err).__name__}"}
        metrics = only_scalars(per_rank[0])  # the trainer already averages over ranks
        num_examples = int(metrics.pop("num_examples", 0))
        state = {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}
        if privacy is not None:
            import ray

            from crossfed.federation.privacy import clip_update

            state = clip_update(ray.get(global_ref[0]), state, privacy["clip_norm"], np.float32)
            if not privacy["metrics"]:
                metrics, num_examples = {}, 1
        return {
            "client": self.name,
            "state": state,
            "num_examples": num_examples,
            "metrics": metrics,
            "compute_s": footprint["wall_s"],
            "footprint": footprint,
        }

    def evaluate(self, global_ref: list, checkpoint_round: int | None) -> dict:
        """{"metrics": those of the global model on this client's validation split (shared part = global),
        "footprint": the evaluation's (None if a worker died in it)}."""
        started = time.perf_counter()
        try:
            self.workers.meter_start()
            self._call_ranks("load_shared_state", global_ref[0])
            metrics = only_scalars(self._call_ranks("evaluate")[0])
            return {"metrics": metrics,
                    "footprint": call_footprint(self.workers.meter_stop(), time.perf_counter() - started)}
        except Exception as err:  # noqa: BLE001
            if not _is_worker_failure(err):
                raise
            self._restart_workers(checkpoint_round, global_ref[0])
            return {"metrics": {}, "footprint": None}

    def snapshot(self, round_number: int) -> None:
        """Checkpoint the full client state (private parameters, optimizer, data cursors) as it is now:
        every rank saves its part locally and puts it into the run storage in the background, while the
        next round trains; `save` then completes the checkpoint."""
        folder = self.store.child(checkpoint.round_folder(round_number))
        folder.remove()  # what an attempt that never committed may have left
        self._call_ranks("snapshot_checkpoint", folder.location)

    def save(self, round_number: int) -> FileEntry | None:
        """Complete the checkpoint `snapshot` began: once every rank's files are in the run storage, the
        MANIFEST listing them is written; its entry, which the driver's commit marker records. None when a
        rank died since the snapshot (its part is lost; the client keeps its older checkpoint). Called while
        the next round's `fit` runs (a rank answers it from a second thread)."""
        folder = self.store.child(checkpoint.round_folder(round_number))
        workers = self.workers  # `fit` may replace a broken group meanwhile
        try:
            per_rank = workers.uploaded_checkpoints(folder.location)
        except Exception as err:  # noqa: BLE001 - only worker deaths are handled, the rest re-raised
            if not _is_worker_failure(err):
                raise
            return None
        if any(files is None for files in per_rank):
            return None
        files = checkpoint.merge_rank_files(per_rank)
        return checkpoint.write_manifest(self.store, round_number, files, ranks=len(per_rank))

    def verify(self, round_number: int, manifest: FileEntry) -> str | None:
        """Why this client's checkpoint of `round_number` cannot be used (the file and what is wrong with
        it), checked against the driver's marker and the checksums; None when it is intact."""
        try:
            files = checkpoint.read_manifest(self.store, round_number, manifest)
            self.store.verify(files, checkpoint.round_folder(round_number))
        except DamagedFile as err:
            return f"{err.name}: {err.problem}"
        return None

    def prune(self, keep_rounds: list[int]) -> None:
        """Delete this client's checkpoints other than `keep_rounds`, the ones committed rounds still name
        (called by the driver only after a commit)."""
        keep = {checkpoint.round_folder(r) for r in keep_rounds}
        for name in self.store.listdir():
            if name.startswith("round_") and name not in keep:
                self.store.remove(name)

    def export_model(self) -> str:
        """Write this client's full model - the global shared parameters it holds after the last round, its
        private ones and the adapter normalisers - as an MLflow model folder (`crossfed.serving.mlflow_model`)
        into its folder of the run storage, from its own node: what fine-tuning at its site starts from, and
        what `mlflow.pyfunc.load_model` loads there to embed its events. Its location."""
        from crossfed.serving import mlflow_model

        info = mlflow_model.model_info("foundation", self.config, self.experiments)
        return mlflow_model.export_model_folder(self.store.url("final_model"), self._call_ranks("model_state")[0], info)

    def restore(self, round_number: int | None, global_state: dict[str, np.ndarray] | None) -> None:
        """Load this client's checkpoint of round `round_number` (None: it has none yet), then the global
        model: to resume, to retry a round, or to rebuild a broken worker group. Every rank fetches the
        checkpoint's files itself, each checked against the MANIFEST's checksums."""
        if round_number is not None:
            folder = self.store.child(checkpoint.round_folder(round_number))
            try:
                files = checkpoint.read_manifest(self.store, round_number)
                self._call_ranks("download_checkpoint", folder.location, files)
            except Exception as err:  # noqa: BLE001 - a damaged file is named; anything else propagates as it is
                cause = innermost_cause(err)
                if not isinstance(cause, DamagedFile):
                    raise
                raise CrossfedError(f"client {self.name}: checkpoint of round {round_number} damaged ({cause})") from None
        if global_state is not None:
            self._call_ranks("load_shared_state", global_state)

    def monitor_system(self) -> None:
        """Sample this client's node's CPU, memory, disk, network and GPUs from now on
        (`crossfed.federation.system_metrics`); the driver hands the samples over with `system_samples`."""
        from crossfed.federation.system_metrics import NodeSampler

        if self.system_sampler is None:
            self.system_sampler = NodeSampler()

    def system_samples(self, final: bool = False) -> list:
        """The samples taken since the last call; `final`: sampling ends, with one last sample."""
        if self.system_sampler is None:
            return []
        if not final:
            return self.system_sampler.take()
        sampler, self.system_sampler = self.system_sampler, None
        return sampler.stop()

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        self.system_samples(final=True)  # stops the sampler; what the driver did not take is not logged
        if self.workers is not None:
            self.workers.shutdown()
        if self.given_placement_group is None and self.placement_group is not None:
            remove_placement_group(self.placement_group)


def client_actor_class():
    """The Ray actor class; tiny (no CPU) and pinned with the node-group label like its workers."""
    import ray

    return ray.remote(num_cpus=0, max_concurrency=2)(FederationClient)
