"""The driver actor: creates the client actors and runs aggregation rounds.

A round: sample clients → `ray.put` the global shared weights once → each client trains `local_steps`
and returns its shared state → drop failed clients and stragglers (`round_timeout_s`), retry the round
if fewer than `min_clients` answered (every client restarting from its last checkpoint, so a retried
round computes what an undisturbed one would have) → validate updates → central DP (optional) → aggregate →
evaluate the new global model on every client's validation split → checkpoint (clients first, then
the driver's round folder, atomically) → return the round's scalar record for logging.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossfed.config import ClusterConfig, RunConfig
from crossfed.errors import CrossfedError
from crossfed.federation import placement
from crossfed.federation.client import client_actor_class, state_nbytes
from crossfed.federation.result import read_latest_checkpoint, save_state, write_round_checkpoint

log = logging.getLogger(__name__)


@dataclass
class ClientSpec:
    """One client of a run: its name, the experiments whose data it holds and where it runs."""

    name: str
    experiments: list[str]
    cluster: ClusterConfig


@dataclass
class RoundPlan:
    """How the engine runs for one mode (the federation, or a single-client baseline)."""

    clients: list[ClientSpec]
    shared: list[str]
    steps_per_round: list[int]  # local steps of each round, index 0 = round 1
    federated: bool  # False: a baseline — one client, its state is taken as is (no strategy, DP, FedProx)


def wait_until(refs: list, timeout_s: float) -> tuple[list, list]:
    """The refs that are ready within `timeout_s`, and the rest.

    One at a time: a single ray.wait(num_returns=len(refs), timeout=...) was seen here to return none
    at the timeout although some had long been ready.
    """
    import ray

    deadline = time.monotonic() + timeout_s
    done, pending = [], list(refs)
    while pending and (remaining := deadline - time.monotonic()) > 0:
        ready, pending = ray.wait(pending, num_returns=1, timeout=remaining)
        done += ready
    return done, pending


def first_worker_bundle(placement_group, plan: RoundPlan) -> int:
    """Index of the first worker bundle in a caller's placement group: 1 when it has one bundle more
    than the clients have workers (a Tune trial's own bundle 0), else 0."""
    if placement_group is None:
        return 0
    workers = sum(spec.cluster.workers for spec in plan.clients)
    bundles = len(placement_group.bundle_specs)
    if bundles not in (workers, workers + 1):
        raise CrossfedError(f"the placement group has {bundles} bundles; the clients need {workers} worker bundles")
    return bundles - workers


class FederationDriver:
    """Ray actor (see `driver_actor_class`). Holds the global model, strategy and privacy accountant."""

    def __init__(self, config: RunConfig, plan: RoundPlan, run_dir: str):
        self.config, self.plan, self.run_dir = config, plan, Path(run_dir)
        self.clients = {}
        self.completed_rounds = 0
        self.history: list[dict] = []
        self.last_received: dict[str, dict] = {}
        self.stragglers: dict[str, object] = {}  # client -> its unfinished fit; busy until that returns
        self.client_rounds: dict[str, int] = {}  # client -> round of its last checkpoint

    def start(self, resume: bool, placement_group=None) -> None:
        """Start the clients (failing fast on a node group that cannot host one), then load or make the
        global model. Separate from __init__ so a CrossfedError reaches the caller as itself."""
        import ray

        from crossfed.federation.strategies import build_strategy

        config, plan = self.config, self.plan
        fed = config.federation
        self.strategy = build_strategy(fed.strategy) if plan.federated else None
        self.privacy = self._build_privacy() if plan.federated and fed.privacy.enabled else None
        if self.privacy is not None and not self.strategy.mean_based:
            raise CrossfedError(
                f"federation.privacy: central DP needs a mean-based strategy, not {fed.strategy.name!r}"
            )
        client_cls = client_actor_class()
        # Check every client before starting any, with earlier clients' reservations counted, so an
        # impossible node group fails in seconds; then start them all at once (DeepSpeed start-up is slow).
        free = None
        bundle_offset = first_worker_bundle(placement_group, plan)
        for spec in plan.clients:
            if placement_group is None:
                free = placement.check_feasible(spec.cluster, spec.name, free)
            given = (placement_group, bundle_offset) if placement_group is not None else None
            bundle_offset += spec.cluster.workers
            selector = placement.label_selector(spec.cluster) if placement_group is None else None
            self.clients[spec.name] = client_cls.options(label_selector=selector).remote(
                config, spec.name, spec.experiments, spec.cluster, str(self.run_dir / "clients" / spec.name),
                sum(plan.steps_per_round), given,
            )
        ray.get([client.start.remote() for client in self.clients.values()])
        if resume:
            self._restore()
        else:
            first = next(iter(self.clients.values()))
            self.global_state = ray.get(first.shared_state.remote(plan.shared))
            # Round 0 checkpoints: a retried first round starts from exactly where the first attempt did.
            ray.get([client.save.remote(0) for client in self.clients.values()])
            self.client_rounds = {name: 0 for name in self.clients}

    # -- set-up ---------------------------------------------------------------------------------------
    def _build_privacy(self):
        from crossfed.federation.privacy import CentralPrivacy

        return CentralPrivacy(self.config.federation.privacy, total_clients=len(self.plan.clients))

    def _restore(self) -> None:
        import ray

        round_number, self.global_state, driver_state = read_latest_checkpoint(self.run_dir)
        self.completed_rounds, self.history = round_number, driver_state["history"]
        if self.strategy is not None:
            self.strategy.load_state_dict(driver_state["strategy"])
        if self.privacy is not None:
            self.privacy.load_state_dict(driver_state["privacy"])
        self.client_rounds = driver_state["client_rounds"]
        ray.get([client.restore.remote(self.client_rounds.get(name), self.global_state)
                 for name, client in self.clients.items()])

    # -- queries (tests, CLI) -------------------------------------------------------------------------
    def client_handles(self) -> dict:
        return dict(self.clients)

    def received(self) -> dict[str, dict]:
        """What the driver received from each client in the last round (the privacy audit looks here)."""
        return self.last_received

    def state(self) -> tuple[int, list[dict]]:
        return self.completed_rounds, self.history

    # -- a round --------------------------------------------------------------------------------------
    def run_round(self) -> dict:
        """Run the next round (retrying it if too few clients answer) and checkpoint it; its record."""
        fed = self.config.federation
        round_number = self.completed_rounds + 1
        for attempt in range(fed.max_round_retries + 1):
            record = self._attempt_round(round_number, attempt)
            if record is not None:
                return record
            log.warning("round %d: too few client updates, retrying (%d/%d)", round_number, attempt + 1,
                        fed.max_round_retries)
        raise CrossfedError(
            f"round {round_number}: fewer than federation.min_clients={self._min_clients()} clients returned an "
            f"update in {fed.max_round_retries + 1} attempt(s); see the client errors in the log"
        )

    def _min_clients(self) -> int:
        return min(self.config.federation.min_clients, len(self.clients)) if self.plan.federated else 1

    def _idle_clients(self) -> list[str]:
        """Clients not still busy with a round they were dropped from for being too slow."""
        import ray

        for name, ref in list(self.stragglers.items()):
            if ray.wait([ref], timeout=0)[0]:
                del self.stragglers[name]  # its late update is discarded
        return [name for name in self.clients if name not in self.stragglers]

    def _sample_clients(self, round_number: int) -> list[str]:
        names = self._idle_clients()
        wanted = self.config.federation.clients_per_round if self.plan.federated else None
        if not wanted or wanted >= len(names):
            return names
        rng = np.random.default_rng([self.config.seed, round_number])  # stateless: same sample on resume
        return sorted(rng.choice(names, size=wanted, replace=False).tolist(), key=names.index)

    def _attempt_round(self, round_number: int, attempt: int) -> dict | None:
        import ray

        from crossfed.federation.strategies import ClientUpdate

        fed = self.config.federation
        started = time.perf_counter()
        sampled = self._sample_clients(round_number)
        if attempt > 0:  # a retry starts every client from its last checkpoint, as the first attempt did
            ray.get([self.clients[name].restore.remote(self.client_rounds.get(name), self.global_state)
                     for name in sampled])
        steps = self.plan.steps_per_round[round_number - 1]
        options = self.strategy.client_options() if self.strategy is not None else {}
        global_ref = ray.put(self.global_state)  # once per round; every rank fetches it itself
        futures = {
            self.clients[name].fit.remote(
                [global_ref], self.plan.shared, steps, float(options.get("proximal_mu", 0.0)),
            ): name
            for name in sampled
        }
        done, stragglers = wait_until(list(futures), fed.round_timeout_s)
        fit_wall_s = time.perf_counter() - started
        payloads, dropped = {}, {}
        for ref in done:
            name = futures[ref]
            try:
                payload = ray.get(ref)
            except ray.exceptions.RayActorError as err:  # the client actor itself died
                dropped[name] = f"client actor died: {type(err).__name__}"
                continue
            if "failed" in payload:
                dropped[name] = payload["failed"]
            else:
                payloads[name] = payload
        for ref in stragglers:
            dropped[futures[ref]] = f"straggler: no answer within round_timeout_s={fed.round_timeout_s:g}"
            self.stragglers[futures[ref]] = ref
        for name, why in dropped.items():
            log.warning("round %d: dropped client %s (%s)", round_number, name, why)
        self.last_received = payloads
        if len(payloads) < self._min_clients():
            return None

        aggregation_started = time.perf_counter()
        updates = [ClientUpdate(p["client"], p["state"], p["num_examples"], p["metrics"]) for p in payloads.values()]
        new_global, rejected = self._aggregate(updates, round_number)
        aggregation_s = time.perf_counter() - aggregation_started

        new_ref = ray.put(new_global)
        evaluations = self._evaluate_everywhere(new_ref)
        idle = self._idle_clients()  # a straggler keeps its older checkpoint (resume restores that one)
        ray.get([self.clients[name].save.remote(round_number) for name in idle])
        self.client_rounds.update({name: round_number for name in idle})
        self.global_state = new_global
        self.completed_rounds = round_number

        compute_s = max(p["compute_s"] for p in payloads.values())
        record = {
            "round": round_number,
            "clients/sampled": len(sampled),
            "clients/updated": len(updates) - len(rejected),
            "clients/dropped": len(dropped),
            "clients/rejected": len(rejected),
            "round/attempt": attempt,
            "bytes/sent": state_nbytes(self.global_state) * len(sampled),
            "bytes/received": sum(state_nbytes(p["state"]) for p in payloads.values()),
            "time/local_compute_s": compute_s,
            "time/transfer_s": max(0.0, fit_wall_s - compute_s),
            "time/aggregation_s": aggregation_s,
            "time/round_s": time.perf_counter() - started,
        }
        record.update(self._metric_record(payloads, evaluations))
        if self.privacy is not None:
            record["privacy/epsilon"] = float(self.privacy.epsilon())
        self.history.append(record)
        self._checkpoint(round_number)
        return record

    def _aggregate(self, updates: list, round_number: int) -> tuple[dict, list[str]]:
        """Validate, noise (central DP) and aggregate; baselines take their single client's state."""
        if self.strategy is None:
            return dict(updates[0].state), []
        from crossfed.federation.validation import validate_updates

        accepted, rejected = validate_updates(self.global_state, updates, self.config.federation.validation)
        for name, why in rejected:
            log.warning("rejected update from %s: %s", name, why)
        if len(accepted) < self._min_clients():
            raise CrossfedError(
                f"only {len(accepted)} of {len(updates)} client updates passed validation "
                f"(min_clients={self._min_clients()}): " + "; ".join(f"{k}: {v}" for k, v in rejected)
            )
        rejected_names = [name for name, _ in rejected]
        if self.privacy is not None:
            # Noise drawn from (seed, round): a resumed or retried round adds the same noise.
            rng = np.random.default_rng([self.config.seed, round_number, 7])
            return self.privacy.aggregate(self.strategy, self.global_state, accepted, rng), rejected_names
        return self.strategy.aggregate(self.global_state, accepted), rejected_names

    def _evaluate_everywhere(self, global_ref) -> dict[str, dict]:
        import ray

        futures = {self.clients[name].evaluate.remote([global_ref]): name for name in self._idle_clients()}
        done, _ = wait_until(list(futures), self.config.federation.round_timeout_s)
        return {futures[ref]: ray.get(ref) for ref in done}

    def _metric_record(self, payloads: dict, evaluations: dict) -> dict[str, float]:
        record = {}
        for name, payload in payloads.items():
            record[f"client/{name}/num_examples"] = payload["num_examples"]
            for key, value in payload["footprint"].items():
                record[f"client/{name}/round_{key}"] = value
            for key, value in payload["metrics"].items():
                record[f"client/{name}/train_{key}"] = value
        for name, metrics in evaluations.items():
            for key, value in metrics.items():
                record[f"client/{name}/val_{key}"] = value
        # The global model's metric: the mean over experiments (each experiment counts once).
        keys = sorted({k for m in evaluations.values() for k in m})
        for key in keys:
            values = [m[key] for m in evaluations.values() if key in m]
            record[f"global/val_{key}"] = float(np.mean(values))
        return record

    def _checkpoint(self, round_number: int) -> None:
        driver_state = {
            "round": round_number,
            "strategy": self.strategy.state_dict() if self.strategy is not None else {},
            "privacy": self.privacy.state_dict() if self.privacy is not None else {},
            # client sampling and DP noise are drawn from (seed, round); the training RNGs are in
            # each client's checkpoint
            "rng": {"seed": self.config.seed},
            "history": self.history,
            "client_rounds": dict(self.client_rounds),
        }
        write_round_checkpoint(self.run_dir, round_number, self.global_state, driver_state)

    # -- the end --------------------------------------------------------------------------------------
    def finish(self) -> dict:
        """Write the final global state and have each client export its full model; return their paths
        and each client's footprint."""
        import ray

        path = self.run_dir / "global_final.npz"
        save_state(path, self.global_state)
        client_models = {name: ray.get(client.export_model.remote()) for name, client in self.clients.items()}
        footprints = {}
        for name, client in self.clients.items():
            try:
                footprints[name] = ray.get(client.footprint.remote())
            except Exception as err:  # noqa: BLE001 - a footprint is reported "where available"
                log.info("no footprint from %s: %s", name, err)
        return {"global_state_path": str(path), "client_models": client_models, "footprints": footprints}

    def shutdown(self) -> None:
        import ray

        for client in self.clients.values():
            try:
                ray.get(client.shutdown.remote(), timeout=60)
            except Exception as err:  # noqa: BLE001 - tear down the rest anyway
                log.warning("client shutdown: %s", err)
            ray.kill(client, no_restart=True)


def driver_actor_class():
    import ray

    return ray.remote(num_cpus=0, max_concurrency=4)(FederationDriver)
