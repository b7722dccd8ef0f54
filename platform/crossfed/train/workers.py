"""A client's ranks as Ray actors forming one torch.distributed group, each holding a `LocalTrainer`.

Events never travel through the driver: every worker loads its experiment's files itself from the config.
The federation pins a group to its node group with `label_selector` or a placement group's bundles.
"""

from __future__ import annotations

import os

from crossfed.config import RunConfig


class TrainerWorker:
    """One rank. Made a Ray actor class by `WorkerGroup` (so importing this module does not import Ray)."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size
        self.trainer = None

    def rendezvous_address(self) -> tuple[str, int]:
        """This node's address and a free port on it, for rank 0 to host the process group."""
        import ray

        from crossfed.train.trainer import free_port

        return ray.util.get_node_ip_address(), free_port()

    def setup(self, config: RunConfig, experiments: list[str], master_addr: str, master_port: int,
              total_steps: int | None) -> None:
        # Ray gives each actor its own GPUs via CUDA_VISIBLE_DEVICES, so the local device index is always 0.
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK="0")
        from crossfed.train.trainer import LocalTrainer

        self.trainer = LocalTrainer(config, experiments, rank=self.rank, world_size=self.world_size,
                                    total_steps=total_steps)

    def call(self, method: str, *args, **kwargs):
        return getattr(self.trainer, method)(*args, **kwargs)


class WorkerGroup:
    def __init__(self, config: RunConfig, experiments: list[str], *, num_workers: int = 1,
                 cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0, placement_group=None,
                 bundle_offset: int = 0, label_selector: dict[str, str] | None = None,
                 total_steps: int | None = None):
        """Start `num_workers` actors (worker i in bundle `bundle_offset + i` when a placement group is
        given) and build their trainers; returns when every rank has joined the process group."""
        import ray

        remote_class = ray.remote(TrainerWorker)
        env = {} if gpus_per_worker > 0 else {"DS_ACCELERATOR": "cpu"}  # before DeepSpeed is imported
        self.workers = []
        for rank in range(num_workers):
            options = dict(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, runtime_env={"env_vars": env})
            if placement_group is not None:
                from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group, placement_group_bundle_index=bundle_offset + rank)
            if label_selector:
                options["label_selector"] = dict(label_selector)
            self.workers.append(remote_class.options(**options).remote(rank, num_workers))
        try:
            master_addr, master_port = ray.get(self.workers[0].rendezvous_address.remote())
            # All ranks must be set up concurrently: joining the process group blocks until everyone has.
            ray.get([w.setup.remote(config, experiments, master_addr, master_port, total_steps)
                     for w in self.workers])
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

    def shutdown(self) -> None:
        import ray

        for worker in self.workers:
            ray.kill(worker)
        self.workers = []
