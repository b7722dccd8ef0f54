"""A client's ranks as Ray actors forming one torch.distributed group, each holding a `LocalTrainer`.

Events never travel through the driver: every worker loads its experiment's files itself from the config.
The federation pins a group to its node group with `label_selector` or a placement group's bundles.

GPUs are placed as Ray Train places them (`_share_cuda_visible_devices`): Ray gives each actor only its own
GPU, but the workers of one node then see all of that node's workers' GPUs (one CUDA_VISIBLE_DEVICES), and
each gets LOCAL_RANK = its GPU's index in that list and LOCAL_WORLD_SIZE = the node's worker count, so NCCL
can use the peer-to-peer links (NVLink) between GPUs of one node.
"""

from __future__ import annotations

import os
import socket

from crossfed.config import RunConfig


def free_port() -> int:
    """A port free on this node now. Here, not in trainer.py: rank 0 answers `rendezvous_address` without
    importing torch, so every rank imports it at once in `setup` instead of waiting for rank 0's import."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


class TrainerWorker:
    """One rank. Made a Ray actor class by `WorkerGroup` (so importing this module does not import Ray).

    It meters its own devices (`start_meter`, `stop_meter`): it is the process that holds them.
    """

    def __init__(self, rank: int, world_size: int, cpus: float = 1.0, gpus: float = 0.0):
        self.rank, self.world_size = rank, world_size
        self.cpus, self.gpus = cpus, gpus
        self.trainer, self.meter = None, None

    def placement(self) -> tuple[str, list[str]]:
        """(node id, GPU ids Ray assigned to this actor)."""
        import ray

        context = ray.get_runtime_context()
        return context.get_node_id(), [str(g) for g in context.get_accelerator_ids().get("GPU", [])]

    def rendezvous_address(self) -> tuple[str, int]:
        """This node's address and a free port on it, for rank 0 to host the process group."""
        import ray

        return ray.util.get_node_ip_address(), free_port()

    def environment(self) -> dict[str, str]:
        """The distributed-training variables this rank runs with (for tests and diagnostics)."""
        names = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                 "CUDA_VISIBLE_DEVICES")
        return {name: os.environ[name] for name in names if name in os.environ}

    def setup(self, config: RunConfig, experiments: list[str], master_addr: str, master_port: int,
              total_steps: int | None, local: dict[str, str]) -> None:
        """`local`: this rank's LOCAL_RANK, LOCAL_WORLD_SIZE and (on GPUs) CUDA_VISIBLE_DEVICES, from
        `local_environments`; set before torch first touches CUDA."""
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), **local)
        from crossfed.train.trainer import LocalTrainer

        self.trainer = LocalTrainer(config, experiments, rank=self.rank, world_size=self.world_size,
                                    total_steps=total_steps)

    def start_meter(self) -> None:
        from crossfed.federation.footprint import RankMeter

        if self.meter is None:  # its own GPUs: the ids Ray assigned to this actor (NVML's numbering)
            self.meter = RankMeter(self.cpus, self.gpus, [int(g) for g in self.placement()[1]])
        self.meter.start()

    def stop_meter(self) -> dict[str, float]:
        """This rank's device-hours and measured energy since `start_meter` (see `federation.footprint`)."""
        return self.meter.stop()

    def call(self, method: str, *args, **kwargs):
        return getattr(self.trainer, method)(*args, **kwargs)


def local_environments(placements: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
    """Per rank, from each rank's (node id, own GPU ids): LOCAL_RANK, LOCAL_WORLD_SIZE, CUDA_VISIBLE_DEVICES.

    On a node, CUDA_VISIBLE_DEVICES is the sorted union of its workers' GPUs, and local ranks follow the
    position of each worker's first GPU in it (then the global rank). With one GPU per worker, the setup
    NCCL supports, LOCAL_RANK is then also the index of the worker's own GPU, the device DeepSpeed and
    `trainer.init_distributed` select. Workers without GPUs get local ranks by global rank and no
    CUDA_VISIBLE_DEVICES.
    """
    by_node: dict[str, list[int]] = {}
    for rank, (node, _) in enumerate(placements):
        by_node.setdefault(node, []).append(rank)
    environments: list[dict[str, str]] = [{} for _ in placements]
    for ranks in by_node.values():
        visible = sorted({gpu for rank in ranks for gpu in placements[rank][1]}, key=lambda g: (len(g), g))
        position = {rank: visible.index(placements[rank][1][0]) if placements[rank][1] else 0 for rank in ranks}
        for local_rank, rank in enumerate(sorted(ranks, key=lambda r: (position[r], r))):
            environments[rank] = {"LOCAL_RANK": str(local_rank), "LOCAL_WORLD_SIZE": str(len(ranks))}
            if visible:
                environments[rank]["CUDA_VISIBLE_DEVICES"] = ",".join(visible)
    return environments


class WorkerGroup:
    def __init__(self, config: RunConfig, experiments: list[str], *, num_workers: int = 1,
                 cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0, placement_group=None,
                 bundle_offset: int = 0, label_selector: dict[str, str] | None = None,
                 total_steps: int | None = None):
        """Start `num_workers` actors (worker i in bundle `bundle_offset + i` when a placement group is
        given) and build their trainers; returns when every rank has joined the process group."""
        import ray

        # "checkpoint": a second thread, where a rank says which files its checkpoint snapshot put into the
        # run storage while its default thread trains the next round (`uploaded_checkpoints`)
        remote_class = ray.remote(concurrency_groups={"checkpoint": 1})(TrainerWorker)
        # No runtime env (DeepSpeed's accelerator is set by `trainer.init_distributed`, before it is first
        # imported): a rank can then start in one of Ray's prestarted worker processes, not a new one.
        self.workers = []
        for rank in range(num_workers):
            options = dict(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)
            if placement_group is not None:
                from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group, placement_group_bundle_index=bundle_offset + rank)
            if label_selector:
                options["label_selector"] = dict(label_selector)
            self.workers.append(remote_class.options(**options).remote(rank, num_workers, cpus_per_worker,
                                                                       gpus_per_worker))
        try:
            master_addr, master_port = ray.get(self.workers[0].rendezvous_address.remote())
            local = local_environments(ray.get([w.placement.remote() for w in self.workers]))
            # All ranks must be set up concurrently: joining the process group blocks until everyone has.
            ray.get([w.setup.remote(config, experiments, master_addr, master_port, total_steps, env)
                     for w, env in zip(self.workers, local)])
        except BaseException:
            self.shutdown()
            raise

    def call_async(self, method: str, *args, **kwargs) -> list:
        """Start `method` on every rank; returns the Ray object refs (for callers with their own timeout)."""
        return [w.call.remote(method, *args, **kwargs) for w in self.workers]

    def call(self, method: str, *args, **kwargs) -> list:
        """Run a `LocalTrainer` method on every rank at once and return the per-rank results."""
        import ray

        return ray.get(self.call_async(method, *args, **kwargs))

    def uploaded_checkpoints(self, location: str) -> list[dict | None]:
        """Each rank's `LocalTrainer.uploaded_checkpoint`, answered in the ranks' "checkpoint" concurrency
        group: while they train."""
        import ray

        return ray.get([w.call.options(concurrency_group="checkpoint").remote("uploaded_checkpoint", location)
                        for w in self.workers])

    def meter_start(self) -> None:
        import ray

        ray.get([w.start_meter.remote() for w in self.workers])

    def meter_stop(self) -> list[dict[str, float]]:
        """Each rank's footprint since `meter_start`."""
        import ray

        return ray.get([w.stop_meter.remote() for w in self.workers])

    def shutdown(self) -> None:
        import ray

        for worker in self.workers:
            ray.kill(worker)
        self.workers = []
