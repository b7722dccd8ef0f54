"""The driver actor: creates the client actors and runs aggregation rounds.

A round is eight named steps, called in this order by `FederationDriver.run_round`; each takes what the
one before returned, so each can be run (and tested) alone:

1. `sample`     the clients of this round: every idle one, or `clients_per_round` of them drawn from
                (seed, round), so a resumed or retried round draws the same;
2. `broadcast`  `ray.put` the global shared weights once and start every sampled client's local training
                (on a retry, each client first goes back to its last checkpoint, so a retried round
                computes what an undisturbed one would have);
3. `collect`    the updates that arrive within `round_timeout_s`; failed clients and stragglers are
                dropped. Fewer than `min_clients` updates: the round is retried (`max_round_retries`);
4. `validate`   reject malformed and outlier updates (federation only);
5. `privatise`  central DP: clip each update, draw the aggregate's noise from (seed, round) (if enabled);
6. `aggregate`  the strategy turns the updates into the next global weights (a baseline's single client
                simply hands its weights over);
7. `evaluate`   the new global model on every idle client's validation split;
8. `commit`     checkpoint the clients, then the driver's round files, then its commit marker; only then
                adopt the new global model and record the round, and remove checkpoints no kept round
                needs (`crossfed.federation.checkpoint` describes the protocol and the layout).

What a retry or a resume needs is one `RecoveryState`; the step functions change it only where its
docstring says.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossfed.config import ClusterConfig, RunConfig
from crossfed.errors import CrossfedError
from crossfed.federation import checkpoint, placement
from crossfed.federation.client import client_actor_class, state_nbytes
from crossfed.federation.result import save_state
from crossfed.federation.strategies import ClientUpdate, State, build_strategy
from crossfed.storage import FileEntry, Storage

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


@dataclass
class RecoveryState:
    """Where the run could restart from: everything a retried round or a resumed run needs, in one place.

    Invariants, true whenever no round is running (`collect` adds stragglers, `idle` frees those whose
    fit has returned; `client_rounds`, `client_manifests` and `completed_rounds` move only in `commit`):
    - `completed_rounds` is the last round whose commit marker is written; the driver's global model and
      history are those after that round. Round 0 is committed at start (the initial model), so that a
      run stopped before its first round resumes from there.
    - `client_rounds[name]`, for every started client, is the round of that client's newest committed
      checkpoint (0: the one written at start); never more than `completed_rounds`. `client_manifests[name]`
      is the entry (size, SHA-256) of that checkpoint's MANIFEST, which the marker records. A retried round
      and a resumed run restore each client from exactly that checkpoint, and a client whose workers die
      rebuilds them from it: its round is passed along with every `fit` and `evaluate`, so clients
      remember none of it themselves.
    - `stragglers[name]` is the unfinished fit of a client dropped for being too slow. Until that fit
      returns the client is busy: not sampled, evaluated or checkpointed (its `client_rounds` entry stays
      behind), and its late update is discarded. Stragglers are not saved: after a resume none is running.
    Saved with every round's driver checkpoint (`to_checkpoint`), the stragglers excepted.

    Crash windows (the driver or its process killed at any point; `--resume` then continues from the
    newest intact committed round, and a run without any commit restarts from its initial model):
    - while clients write round k's checkpoints, or before the driver's marker of round k: round k is not
      committed; the resume restores round k-1, whose client checkpoints are still there, because a client
      deletes a checkpoint only when the driver, after committing a newer round, says no kept round needs it.
      The uncommitted files of round k are overwritten when round k is run again.
    - after the marker, before the old rounds are removed: both are committed; the next commit removes them.
    - a file damaged later (a truncated upload, a full disk): its checksum no longer matches, the round is
      skipped for the one before (`checkpoint.keep` rounds are kept), and said so in one line.
    """

    completed_rounds: int = 0
    client_rounds: dict[str, int] = field(default_factory=dict)
    client_manifests: dict[str, FileEntry] = field(default_factory=dict)
    stragglers: dict[str, Any] = field(default_factory=dict)  # client -> the ObjectRef of its dropped fit

    def idle(self, names: list[str]) -> list[str]:
        """`names` less the clients still busy with a dropped fit; a straggler whose fit has ended is free."""
        import ray

        for name, ref in list(self.stragglers.items()):
            if ray.wait([ref], timeout=0)[0]:
                del self.stragglers[name]
        return [name for name in names if name not in self.stragglers]

    def committed(self, round_number: int, checkpointed: dict[str, FileEntry]) -> None:
        """Round `round_number` is committed, with new checkpoints of the clients `checkpointed`
        (client -> its MANIFEST's entry)."""
        self.client_rounds.update(dict.fromkeys(checkpointed, round_number))
        self.client_manifests.update(checkpointed)
        self.completed_rounds = round_number

    def client_checkpoints(self) -> dict[str, checkpoint.ClientCheckpoint]:
        return {name: checkpoint.ClientCheckpoint(round_number, self.client_manifests[name])
                for name, round_number in self.client_rounds.items()}

    def copy(self) -> RecoveryState:
        """The committed part (what a commit writes before it adopts it); stragglers are not copied."""
        return RecoveryState(self.completed_rounds, dict(self.client_rounds), dict(self.client_manifests))

    def to_checkpoint(self) -> dict:
        return {"round": self.completed_rounds, "client_rounds": dict(self.client_rounds)}


@dataclass
class Collected:
    """What a round's local training brought back by its deadline (the `collect` step)."""

    payloads: dict[str, dict]  # client -> its fit's payload: shared state, num_examples, metrics, timings
    dropped: dict[str, str]  # client -> why it gave no update (failed, its actor died, too slow)

    def updates(self) -> list[ClientUpdate]:
        return [ClientUpdate(p["client"], p["state"], p["num_examples"], p["metrics"]) for p in self.payloads.values()]


def sample_clients(names: list[str], wanted: int | None, seed: int, round_number: int) -> list[str]:
    """`wanted` of the idle clients `names` (all when None or more), drawn from (seed, round) alone, so a
    resumed or retried round samples the same clients; in the order of `names`."""
    if not wanted or wanted >= len(names):
        return list(names)
    rng = np.random.default_rng([seed, round_number])
    return sorted(rng.choice(names, size=wanted, replace=False).tolist(), key=names.index)


class FederationDriver:
    """Ray actor (see `driver_actor_class`). Holds the global model, strategy and privacy accountant.

    A plain class too: the round's steps can be called one by one on an instance (tests do).
    """

    def __init__(self, config: RunConfig, plan: RoundPlan, run_location: str):
        """`run_location`: the run's folder in the run storage (a local path or a URI)."""
        self.config, self.plan = config, plan
        self.run = Storage(run_location)
        fed = config.federation
        self.strategy = build_strategy(fed.strategy) if plan.federated else None
        self.privacy = self._build_privacy() if plan.federated and fed.privacy.enabled else None
        self.clients = {}
        self.global_state: State = {}
        self.history: list[dict] = []
        self.recovery = RecoveryState()
        self.last_received: dict[str, dict] = {}

    def start(self, resume: bool, placement_group=None, logged_rounds: int = 0) -> dict:
        """Start the clients (failing fast on a node group that cannot host one), then load or make the
        global model. Separate from __init__ so a CrossfedError reaches the caller as itself.

        With `resume`, the newest committed round whose every file is intact is restored (`logged_rounds`:
        how many rounds MLflow holds for the run, so that missing storage is not mistaken for a run that
        never committed). Returns what the caller logs: `fingerprints` (the data tags each client computed
        at its site) and `notes` (one line on damaged rounds skipped)."""
        import ray

        config, plan = self.config, self.plan
        self.run.write_json(checkpoint.RUN_FILE, {"run": self.run.location, "mode": "federated" if plan.federated
                                                  else "baseline", "clients": [c.name for c in plan.clients]})
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
                config, spec.name, spec.experiments, spec.cluster, self.run.location, sum(plan.steps_per_round),
                given,
            )
        fingerprints = {}
        for tags in ray.get([client.site_report.remote() for client in self.clients.values()]):
            fingerprints.update(tags)
        chosen, notes = self.newest_intact_round(logged_rounds) if resume else (None, [])
        ray.get([client.start.remote() for client in self.clients.values()])
        if chosen is not None:
            self._restore(chosen)
        else:
            first = next(iter(self.clients.values()))
            # Round 0 is committed like any other: a run stopped before round 1 resumes from the initial
            # model, and a retried first round starts from exactly where the first attempt did.
            self.commit(0, ray.get(first.shared_state.remote(plan.shared)), None)
        return {"fingerprints": fingerprints, "notes": notes}

    # -- set-up ---------------------------------------------------------------------------------------
    def _build_privacy(self):
        from crossfed.federation.privacy import CentralPrivacy

        return CentralPrivacy(self.config.federation.privacy, total_clients=len(self.plan.clients))

    def newest_intact_round(self, logged_rounds: int) -> tuple[checkpoint.RoundCheckpoint | None, list[str]]:
        """The newest committed round whose files (the driver's, and every client's, each checked at its own
        site) match their checksums; and a note naming the damaged rounds skipped for it. None: the run
        never committed a round (it then starts from its initial model)."""
        import ray

        committed = checkpoint.committed_rounds(self.run)
        if not committed and logged_rounds > 0:
            raise CrossfedError(
                f"cannot resume: MLflow holds {logged_rounds} round(s) of this run but no committed round is in "
                f"{self.run.location} (was it run with another output_dir or CROSSFED_STORAGE?)")
        damaged = []
        for round_number in committed:
            try:
                found = checkpoint.read_round(self.run, round_number)
                missing = sorted(set(self.clients) - set(found.clients))
                if missing:
                    raise checkpoint.DamagedCheckpoint(f"no checkpoint of client(s) {', '.join(missing)}")
                names = list(self.clients)
                problems = ray.get([self.clients[name].verify.remote(found.clients[name].round,
                                                                     found.clients[name].manifest) for name in names])
                for name, problem in zip(names, problems):
                    if problem:
                        raise checkpoint.DamagedCheckpoint(f"{name} checkpoint damaged ({problem})")
            except checkpoint.DamagedCheckpoint as err:
                damaged.append(f"round {round_number}: {err}")
                continue
            notes = ["; ".join(damaged) + f"; resuming from round {round_number}"] if damaged else []
            return found, notes
        if damaged:
            raise CrossfedError(f"cannot resume run {self.run.location}: no intact committed round left "
                                f"({'; '.join(damaged)})")
        return None, []

    def _restore(self, found: checkpoint.RoundCheckpoint) -> None:
        """Adopt a committed round and put every client back to the checkpoint it names. Committed rounds
        after it (damaged ones) are removed first: they are run and written afresh, as are the files of a
        round that never committed."""
        import ray

        for round_number in checkpoint.committed_rounds(self.run):
            if round_number > found.round:
                checkpoint.remove_round(self.run, round_number)
        driver_state = found.driver_state
        self.recovery = RecoveryState(found.round, {n: c.round for n, c in found.clients.items()},
                                      {n: c.manifest for n, c in found.clients.items()})
        self.history = driver_state["history"]
        self.global_state = found.global_state
        if self.strategy is not None:
            self.strategy.load_state_dict(driver_state["strategy"])
        if self.privacy is not None:
            self.privacy.load_state_dict(driver_state["privacy"])
        ray.get([client.restore.remote(self.recovery.client_rounds.get(name), self.global_state)
                 for name, client in self.clients.items()])
        self._prune(list(self.clients))

    # -- queries (tests, CLI) -------------------------------------------------------------------------
    def client_handles(self) -> dict:
        return dict(self.clients)

    def received(self) -> dict[str, dict]:
        """What the driver received from each client in the last round (the privacy audit looks here)."""
        return self.last_received

    def state(self) -> tuple[int, list[dict]]:
        return self.recovery.completed_rounds, self.history

    # -- a round --------------------------------------------------------------------------------------
    def run_round(self) -> dict:
        """Run the next round (retrying it if too few clients answer) and checkpoint it; its record."""
        fed = self.config.federation
        round_number = self.recovery.completed_rounds + 1
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

    def _attempt_round(self, round_number: int, attempt: int) -> dict | None:
        """The steps in order; None when too few clients answered (the round is to be retried)."""
        started = time.perf_counter()
        sampled = self.sample(round_number)
        fits = self.broadcast(sampled, round_number, retry=attempt > 0)
        collected = self.collect(fits, round_number)
        fit_wall_s = time.perf_counter() - started
        if len(collected.payloads) < self._min_clients():
            return None
        aggregation_started = time.perf_counter()
        updates = collected.updates()
        accepted, rejected = self.validate(updates)
        updates, noise = self.privatise(accepted, round_number)
        new_global = self.aggregate(updates, noise)
        aggregation_s = time.perf_counter() - aggregation_started
        evaluations = self.evaluate(new_global)
        record = {
            "round": round_number,
            "clients/sampled": len(sampled),
            "clients/updated": len(accepted),
            "clients/dropped": len(collected.dropped),
            "clients/rejected": len(rejected),
            "round/attempt": attempt,
            **self._traffic_and_time(sampled, collected, new_global, fit_wall_s, aggregation_s),
            **self._metric_record(collected.payloads, evaluations),
        }
        if self.privacy is not None:
            record["privacy/epsilon"] = float(self.privacy.epsilon())
        self.commit(round_number, new_global, record, round_started=started)
        return record

    def _min_clients(self) -> int:
        return min(self.config.federation.min_clients, len(self.plan.clients)) if self.plan.federated else 1

    def sample(self, round_number: int) -> list[str]:
        """1. The clients that train this round: idle ones, `clients_per_round` of them if set."""
        wanted = self.config.federation.clients_per_round if self.plan.federated else None
        return sample_clients(self.recovery.idle(list(self.clients)), wanted, self.config.seed, round_number)

    def broadcast(self, sampled: list[str], round_number: int, *, retry: bool = False) -> dict:
        """2. Start local training on the sampled clients; {fit ObjectRef: client}. The global weights go
        into the object store once; every rank fetches them itself. A retry first puts each client back to
        its last checkpoint, as the first attempt found it."""
        import ray

        checkpoint_of = self.recovery.client_rounds
        if retry:
            ray.get([self.clients[name].restore.remote(checkpoint_of.get(name), self.global_state)
                     for name in sampled])
        steps = self.plan.steps_per_round[round_number - 1]
        proximal_mu = float(self.strategy.client_options().get("proximal_mu", 0.0)) if self.strategy else 0.0
        global_ref = ray.put(self.global_state)
        return {
            self.clients[name].fit.remote([global_ref], self.plan.shared, steps, proximal_mu, checkpoint_of.get(name)):
                name
            for name in sampled
        }

    def collect(self, fits: dict, round_number: int) -> Collected:
        """3. The updates that arrive within `round_timeout_s`. A client that failed, whose actor died, or
        that is still training is dropped; one still training becomes a straggler (`RecoveryState`)."""
        import ray

        timeout_s = self.config.federation.round_timeout_s
        done, late = wait_until(list(fits), timeout_s)
        collected = Collected({}, {})
        for ref in done:
            name = fits[ref]
            try:
                payload = ray.get(ref)
            except ray.exceptions.RayActorError as err:  # the client actor itself died
                collected.dropped[name] = f"client actor died: {type(err).__name__}"
                continue
            if "failed" in payload:
                collected.dropped[name] = payload["failed"]
            else:
                collected.payloads[name] = payload
        for ref in late:
            collected.dropped[fits[ref]] = f"straggler: no answer within round_timeout_s={timeout_s:g}"
            self.recovery.stragglers[fits[ref]] = ref
        for name, why in collected.dropped.items():
            log.warning("round %d: dropped client %s (%s)", round_number, name, why)
        self.last_received = collected.payloads
        return collected

    def validate(self, updates: list[ClientUpdate]) -> tuple[list[ClientUpdate], list[tuple[str, str]]]:
        """4. (accepted updates, [(client, why rejected)]); too few accepted is an error. A baseline's
        single update is taken as it is."""
        if self.strategy is None:
            return updates, []
        from crossfed.federation.validation import validate_updates

        accepted, rejected = validate_updates(self.global_state, updates, self.config.federation.validation)
        for name, why in rejected:
            log.warning("rejected update from %s: %s", name, why)
        if len(accepted) < self._min_clients():
            raise CrossfedError(
                f"only {len(accepted)} of {len(updates)} client updates passed validation "
                f"(min_clients={self._min_clients()}): " + "; ".join(f"{k}: {v}" for k, v in rejected)
            )
        return accepted, rejected

    def privatise(self, updates: list[ClientUpdate], round_number: int):
        """5. Central DP: (the updates clipped, all weighted alike; the noise for the aggregate delta, drawn
        from (seed, round) so a resumed or retried round adds the same). Without DP: (updates, None)."""
        if self.privacy is None:
            return updates, None
        rng = np.random.default_rng([self.config.seed, round_number, 7])
        return self.privacy.privatize(self.global_state, updates), self.privacy.perturbation(len(updates), rng)

    def aggregate(self, updates: list[ClientUpdate], noise=None) -> State:
        """6. The next global weights: the strategy's aggregate (noised by `noise` before its server step);
        a baseline's single client's weights as they are."""
        if self.strategy is None:
            return dict(updates[0].state)
        return self.strategy.aggregate(self.global_state, updates, perturb_delta=noise)

    def evaluate(self, new_global: State) -> dict[str, dict]:
        """7. {client: validation metrics} of the new global model on every idle client, within the timeout."""
        import ray

        new_ref = ray.put(new_global)
        futures = {
            self.clients[name].evaluate.remote([new_ref], self.recovery.client_rounds.get(name)): name
            for name in self.recovery.idle(list(self.clients))
        }
        done, _ = wait_until(list(futures), self.config.federation.round_timeout_s)
        return {futures[ref]: ray.get(ref) for ref in done}

    def commit(self, round_number: int, new_global: State, record: dict | None, *,
               round_started: float | None = None) -> None:
        """8. Checkpoint every idle client (a straggler keeps its older checkpoint, which a resume then
        restores), then write the driver's round files and the commit marker; only then are the new global
        model and the round's record the driver's, the recovery state moves to this round, and checkpoints
        no kept round needs are removed. `record` None: round 0, the initial model (no record).
        `round_started` (time.perf_counter) stamps the record's `time/round_s`, the round up to its
        clients' checkpoints."""
        import ray

        idle = self.recovery.idle(list(self.clients))
        manifests = dict(zip(idle, ray.get([self.clients[name].save.remote(round_number) for name in idle])))
        if record is not None and round_started is not None:
            record["time/round_s"] = time.perf_counter() - round_started
        history = [*self.history, record] if record is not None else list(self.history)
        recovery = self.recovery.copy()
        recovery.committed(round_number, manifests)
        driver_state = {
            **recovery.to_checkpoint(),
            "strategy": self.strategy.state_dict() if self.strategy is not None else {},
            "privacy": self.privacy.state_dict() if self.privacy is not None else {},
            # client sampling and DP noise are drawn from (seed, round); the training RNGs are in
            # each client's checkpoint
            "rng": {"seed": self.config.seed},
            "history": history,
        }
        checkpoint.write_round(self.run, round_number, new_global, driver_state, recovery.client_checkpoints())
        self.global_state = new_global
        self.history = history
        self.recovery.committed(round_number, manifests)
        self._prune(idle)

    def _prune(self, names: list[str]) -> None:
        """Keep the newest `checkpoint.keep` committed rounds; the clients `names` (idle ones) delete the
        checkpoints none of them names. Only ever after a commit, and a failure here costs disk space,
        never the run."""
        import ray

        try:
            needed = checkpoint.prune_rounds(self.run, self.config.checkpoint.keep)
            ray.get([self.clients[name].prune.remote(sorted(needed.get(name, {self.recovery.client_rounds[name]})))
                     for name in names])
        except Exception as err:  # noqa: BLE001 - the round is committed whatever happens here
            log.warning("removing old checkpoints failed: %s", err)

    def _traffic_and_time(self, sampled: list[str], collected: Collected, new_global: State, fit_wall_s: float,
                          aggregation_s: float) -> dict[str, float]:
        compute_s = max(p["compute_s"] for p in collected.payloads.values())
        return {
            "bytes/sent": state_nbytes(new_global) * len(sampled),
            "bytes/received": sum(state_nbytes(p["state"]) for p in collected.payloads.values()),
            "time/local_compute_s": compute_s,
            "time/transfer_s": max(0.0, fit_wall_s - compute_s),
            "time/aggregation_s": aggregation_s,
        }

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

    # -- the end --------------------------------------------------------------------------------------
    def finish(self) -> dict:
        """Write the final global state and have each client export its full model; return their paths
        and each client's footprint."""
        import ray

        path = self.run.url("global_final.npz")
        save_state(path, self.global_state)
        client_models = {name: ray.get(client.export_model.remote()) for name, client in self.clients.items()}
        footprints = {}
        for name, client in self.clients.items():
            try:
                footprints[name] = ray.get(client.footprint.remote())
            except Exception as err:  # noqa: BLE001 - a footprint is reported "where available"
                log.info("no footprint from %s: %s", name, err)
        return {"global_state_path": path, "client_models": client_models, "footprints": footprints}

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
