"""The driver actor: creates the client actors and runs aggregation rounds.

A round is eight named steps, called in this order by `FederationDriver.run_round` after `rejoin` has
brought back any client whose actor died; each takes what the one before returned, so each can be run
(and tested) alone:

0. `rejoin`     recreate each client whose actor died (a crashed node, an OOM kill, a SIGKILL) and
                resynchronise it from its last checkpoint and the global model;
1. `sample`     the clients of this round: every idle one, or `clients_per_round` of them drawn from
                (seed, round), so a resumed or retried round draws the same; under DP each client with
                probability clients_per_round / clients (Poisson), from OS entropy;
2. `broadcast`  `ray.put` the global shared weights once and start every sampled client's local training
                (on a retry, each client first goes back to its last checkpoint, so a retried round
                computes what an undisturbed one would have);
3. `collect`    the updates that arrive within `round_timeout_s`; failed clients and stragglers are
                dropped. Fewer than `min_clients` updates: the round is retried (`max_round_retries`);
4. `validate`   reject malformed and outlier updates (federation only; under DP the updates are clipped
                first and only per-update checks run). Fewer than `min_clients` left: the round is
                retried; once the retries are spent it goes on with the updates that passed, so a
                rejected update never ends the run;
5. `privatise`  central DP: clip each update, the aggregate's noise from OS entropy (if enabled);
6. `aggregate`  the strategy turns the updates into the next global weights (a baseline's single client
                simply hands its weights over);
7. `evaluate`   the new global model on every idle client's validation split (a client that died in this
                round is skipped: not evaluated, checkpointed or reported until it has rejoined); only
                every `evaluate_every` rounds and after the last (`periodic_round`);
8. `commit`     checkpoint the clients, then the driver's round files, then its commit marker; the round
                counts once the marker is written, and checkpoints no kept round needs are removed then
                (`crossfed.federation.checkpoint` describes the protocol and the layout). With
                `checkpoint.background` only the ranks' snapshots are taken here and the rest is written
                while the next round trains (the driver adopts the round in memory meanwhile). Only
                every `checkpoint.every` rounds and after the last (`periodic_round`); in the rounds
                between, `advance` adopts the round in memory alone.

Under DP the round's record holds only ε, δ and (with `metric_noise_multiplier`) the noised global
validation metrics, unless `per_client_metrics` opts out (federation/privacy.py says why).

What a retry or a resume needs is one `RecoveryState`; the step functions change it only where its
docstring says.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossfed.config import ClusterConfig, RunConfig
from crossfed.errors import CrossfedError
from crossfed.federation import checkpoint, placement
from crossfed.federation.client import client_actor_class, state_nbytes
from crossfed.federation.footprint import add_footprints
from crossfed.federation.result import save_state
from crossfed.federation.strategies import ClientUpdate, State, build_strategy
from crossfed.federation.strategies.base import Layout
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

    Invariants, true whenever no round is running (`collect` adds stragglers and lost clients, `evaluate`
    lost ones, `idle` frees stragglers whose fit has returned, `rejoin` the lost clients it restarted;
    `client_rounds` and `client_manifests` move only when a commit lands, `completed_rounds` in `commit`
    and `advance`):
    - `completed_rounds` is the last round the driver has adopted: its global model and history are those
      after that round. It is the last committed round, or later where rounds were adopted in memory only
      (`advance`) or their commit is still being written (`checkpoint.background`). Round 0 is committed
      at start (the initial model), so that a run stopped before its first round resumes from there.
    - `client_rounds[name]`, for every started client, is the round of that client's newest committed
      checkpoint (0: the one written at start); never more than `completed_rounds`. `client_manifests[name]`
      is the entry (size, SHA-256) of that checkpoint's MANIFEST, which the marker records. A retried round
      and a resumed run restore each client from exactly that checkpoint, and a client whose workers die
      (or a lost client's new actor) rebuilds them from it: its round is passed along with every `fit` and
      `evaluate`, so clients
      remember none of it themselves.
    - `stragglers[name]` is the unfinished fit of a client dropped for being too slow. Until that fit
      returns the client is busy: not sampled, evaluated or checkpointed (its `client_rounds` entry stays
      behind), and its late update is discarded. Stragglers are not saved: after a resume none is running.
    - `lost[name]` says why a client's actor died. Until `rejoin` has recreated it, the client is not
      sampled, evaluated or checkpointed (its `client_rounds` entry stays behind, which is the checkpoint
      the new actor restores).
    Saved with every round's driver checkpoint (`to_checkpoint`), the stragglers and lost clients
    excepted: after a resume every client is a new actor and none is running.

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
    lost: dict[str, str] = field(default_factory=dict)  # client -> why its actor is gone

    def idle(self, names: list[str]) -> list[str]:
        """`names` less the clients still busy with a dropped fit and those lost; a straggler whose fit
        has ended is free again, or lost if that fit ended because its actor died."""
        import ray

        for name, ref in list(self.stragglers.items()):
            if ray.wait([ref], timeout=0)[0]:
                del self.stragglers[name]
                try:
                    ray.get(ref)
                except ray.exceptions.RayActorError as err:
                    self.lost[name] = f"client actor died while a straggler: {type(err).__name__}"
                except Exception as err:  # noqa: BLE001 - a late fit's own failure: the client is free again
                    log.info("the late fit of %s failed: %s", name, err)
        return [name for name in names if name not in self.stragglers and name not in self.lost]

    def committed(self, round_number: int, checkpointed: dict[str, FileEntry]) -> None:
        """Round `round_number` is committed, with new checkpoints of the clients `checkpointed`
        (client -> its MANIFEST's entry). The rounds the driver has run since (a commit written in the
        background) stay completed."""
        self.client_rounds.update(dict.fromkeys(checkpointed, round_number))
        self.client_manifests.update(checkpointed)
        self.completed_rounds = max(self.completed_rounds, round_number)

    def at_commit(self, round_number: int, checkpointed: dict[str, FileEntry]) -> RecoveryState:
        """The committed part as round `round_number`'s commit writes it (stragglers are not copied)."""
        state = RecoveryState(round_number, dict(self.client_rounds), dict(self.client_manifests))
        state.committed(round_number, checkpointed)
        return state

    def client_checkpoints(self) -> dict[str, checkpoint.ClientCheckpoint]:
        return {name: checkpoint.ClientCheckpoint(round_number, self.client_manifests[name])
                for name, round_number in self.client_rounds.items()}

    def to_checkpoint(self) -> dict:
        return {"round": self.completed_rounds, "client_rounds": dict(self.client_rounds)}


@dataclass
class Collected:
    """What a round's local training brought back by its deadline (the `collect` step)."""

    payloads: dict[str, dict]  # client -> its fit's payload: shared state, num_examples, metrics, timings
    dropped: dict[str, str]  # client -> why it gave no update (failed, its actor died, too slow)

    def updates(self) -> list[ClientUpdate]:
        return [ClientUpdate(p["client"], p["state"], p["num_examples"], p["metrics"]) for p in self.payloads.values()]


class PendingCommit:
    """A commit's writing (`FederationDriver._write_commit`), in the foreground (`run`) or in a thread
    (`start`, then `wait`); `result` holds its clients' MANIFEST entries once done."""

    def __init__(self, round_number: int, write):
        self.round, self.write = round_number, write
        self.result: dict[str, FileEntry] = {}
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def run(self) -> None:
        self.result = self.write()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run_catching, name=f"commit-{self.round}", daemon=True)
        self.thread.start()

    def _run_catching(self) -> None:
        try:
            self.run()
        except BaseException as err:  # noqa: BLE001 - raised again by `wait`, in the round's thread
            self.error = err

    def wait(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


def round_footprints(payloads: dict[str, dict], evaluations: dict[str, dict]) -> dict[str, dict]:
    """{client: its footprint in a round}: its training's (from its update's payload) plus its evaluation's."""
    footprints = {name: payload["footprint"] for name, payload in payloads.items()}
    for name, footprint in evaluations.items():
        footprints[name] = add_footprints(footprints.get(name), footprint)
    return footprints


def periodic_round(round_number: int, every: int, last_round: int) -> bool:
    """Whether a step done every N rounds happens after `round_number`: rounds N, 2N, ... and the last
    always. The global model's evaluation (N = `federation.evaluate_every`: a run's final metrics are never
    older than its model) and the commit (N = `checkpoint.every`: a finished run is committed)."""
    return round_number % every == 0 or round_number == last_round


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

    def __init__(self, config: RunConfig, plan: RoundPlan, run_location: str | None, run_key: str | None = None):
        """`run_location`: the run's folder in the run storage (a local path or a URI); None until `start`
        gives it (the clients are launched before the run exists). `run_key`: unique on the cluster, names
        the clients' placement groups (default: the run id, the last part of the run location)."""
        self.config, self.plan, self.run_key = config, plan, run_key
        self.run = Storage(run_location) if run_location is not None else None
        fed = config.federation
        self.strategy = build_strategy(fed.strategy) if plan.federated else None
        self.privacy = self._build_privacy() if plan.federated and fed.privacy.enabled else None
        self.clients = {}
        self.client_options: dict[str, dict] = {}  # name -> the actor options it was started with (`rejoin`)
        self.client_args: dict[str, tuple] = {}  # name -> its constructor arguments
        self.client_groups: dict[str, Any] = {}  # name -> the placement group it reserved itself, if any
        self.client_starts: dict[str, Any] = {}  # name -> the ObjectRef of its `start` (workers starting)
        self.global_state: State = {}
        self.history: list[dict] = []
        self.footprints: dict[str, dict[str, float]] = {}  # client -> its footprint over the rounds so far
        self.committed_round = 0  # the last round committed (`checkpoint.every`: rounds after it in memory)
        self.background_commits = config.checkpoint.background  # refused under DP (RunConfig)
        self.pending_commit: PendingCommit | None = None  # the commit being written in the background
        self.commit_lock = threading.Lock()
        self.recovery = RecoveryState()
        self.last_received: dict[str, dict] = {}
        # The round's updates are screened and aggregated in this [clients, parameters] buffer (`validate`):
        # a new model-sized buffer each round cost more than the work itself (its pages faulted in anew).
        self.update_rows = np.empty((0, 0), np.float32)
        self.monitoring_system = False  # the clients sample their nodes (`monitor_system`)
        self.samples_asked: dict[str, Any] = {}  # client -> its `system_samples` call not answered in time

    def launch(self, placement_group=None) -> None:
        """Create the clients and have them start their workers, without waiting: the slow part of
        start-up (worker processes importing torch and DeepSpeed, building engines, loading events) then
        runs while the caller does its bookkeeping (data checks at each site, the MLflow run). Nothing is
        written to the run storage here; `start` waits for the workers. Every client is checked before
        any starts, with earlier clients' reservations counted, so an impossible node group fails in
        seconds."""
        config, plan = self.config, self.plan
        client_cls = client_actor_class()
        free = None
        bundle_offset = first_worker_bundle(placement_group, plan)
        for spec in plan.clients:
            if placement_group is None:
                free = placement.check_feasible(spec.cluster, spec.name, free)
            self.client_options[spec.name] = placement.client_actor_options(spec.cluster, placement_group,
                                                                            bundle_offset)
            given = (placement_group, bundle_offset) if placement_group is not None else None
            bundle_offset += spec.cluster.workers
            self.client_args[spec.name] = (config, spec.name, spec.experiments, spec.cluster,
                                           self.run.location if self.run else None, sum(plan.steps_per_round), given)
        for name, options in self.client_options.items():
            self.clients[name] = client_cls.options(**options).remote(*self.client_args[name])
            self.client_starts[name] = self.clients[name].start.remote(self.run_key)

    def start(self, resume: bool, placement_group=None, logged_rounds: int = 0,
              run_location: str | None = None) -> list[str]:
        """Launch the clients unless `launch` has, then load or make the global model once their workers
        are up. Separate from __init__ so a CrossfedError reaches the caller as itself.

        `run_location`: the run's folder, when the driver was made before the run existed. With `resume`,
        the newest committed round whose every file is intact is restored (`logged_rounds`: how many rounds
        MLflow holds for the run, so that missing storage is not mistaken for a run that never committed).
        Each client first checks, from its node, that it can reach the run storage (while its workers
        start). Returns the notes the caller logs (one line on damaged rounds skipped)."""
        import ray

        plan = self.plan
        if run_location is not None:
            self.run = Storage(run_location)
        self.run.write_json(checkpoint.RUN_FILE, {"run": self.run.location, "mode": "federated" if plan.federated
                                                  else "baseline", "clients": [c.name for c in plan.clients]})
        if not self.clients:
            self.launch(placement_group)
        for name, args in self.client_args.items():  # a client that rejoins is made knowing the run
            self.client_args[name] = args[:4] + (self.run.location,) + args[5:]
        ray.get([client.check_storage.remote(self.run.location) for client in self.clients.values()])
        chosen, notes = self.newest_intact_round(logged_rounds) if resume else (None, [])
        groups = ray.get([self.client_starts[name] for name in self.clients])
        self.client_groups = dict(zip(self.clients, groups))
        if chosen is not None:
            self._restore(chosen)
        else:
            first = next(iter(self.clients.values()))
            # Round 0 is committed like any other: a run stopped before round 1 resumes from the initial
            # model, and a retried first round starts from exactly where the first attempt did.
            self.commit(0, ray.get(first.shared_state.remote(plan.shared)), None)
        return notes

    # -- set-up ---------------------------------------------------------------------------------------
    def _build_privacy(self):
        from crossfed.federation.privacy import CentralPrivacy

        fed = self.config.federation
        return CentralPrivacy(fed.privacy, total_clients=len(self.plan.clients), expected_clients=fed.clients_per_round)

    def _protects_clients(self) -> bool:
        """Under DP (and unless `per_client_metrics`): nothing about single clients or who took part
        leaves the driver: no per-client metrics, counts, traffic or timings in the record."""
        return self.privacy is not None and not self.config.federation.privacy.per_client_metrics

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
        self.footprints = driver_state["footprints"]
        self.committed_round = found.round
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

    def monitor_system(self) -> None:
        """Every client samples its node's system metrics from now on (`crossfed.federation.system_metrics`);
        clients that rejoin later do too. Not under DP: a client's CPU and network over time would tell
        when it took part; nor with `tracking.system_metrics: false`."""
        import ray

        if self._protects_clients() or not self.config.tracking.system_metrics:
            return
        self.monitoring_system = True
        ray.get([client.monitor_system.remote() for client in self.clients.values()])

    def system_samples(self, final: bool = False) -> dict[str, list]:
        """Each client's node samples taken since the last call (`final`: sampling ends). A client that does
        not answer within a second (`final`: a minute) is not waited for: its answer is taken at the next
        call, as system metrics are not worth holding up a round."""
        import ray

        if not self.monitoring_system:
            return {}
        asked = {name: self.samples_asked.pop(name, None) or self.clients[name].system_samples.remote(final)
                 for name in self.clients if name not in self.recovery.lost}
        done, _ = wait_until(list(asked.values()), 60.0 if final else 1.0)
        found = {}
        for name, ref in asked.items():
            if ref not in done:
                self.samples_asked[name] = ref
                continue
            try:
                found[name] = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - its actor died: those samples are lost
                log.warning("client %s: no system metrics: %s", name, err)
        return {name: samples for name, samples in found.items() if samples}

    def client_nodes(self) -> dict[str, dict]:
        """Each client's node and its ranks' nodes, as the actors themselves report them."""
        import ray

        return dict(zip(self.clients, ray.get([client.node_ids.remote() for client in self.clients.values()])))

    def received(self) -> dict[str, dict]:
        """What the driver received from each client in the last round (the privacy audit looks here)."""
        return self.last_received

    def state(self) -> tuple[int, list[dict]]:
        """The last committed round and the records up to it (a commit being written is waited for)."""
        committed = self.wait_for_commit()
        return committed, [r for r in self.history if r["round"] <= committed]

    def last_commit(self) -> int:
        """The last round whose commit has landed, without waiting for one being written."""
        pending = self.pending_commit
        if pending is not None and pending.thread is not None and not pending.thread.is_alive():
            return self.wait_for_commit()
        return self.committed_round

    # -- a round --------------------------------------------------------------------------------------
    def run_round(self) -> dict:
        """Run the next round (retrying it if too few clients answer) and checkpoint it; its record."""
        fed = self.config.federation
        round_number = self.recovery.completed_rounds + 1
        if self.privacy is not None:
            self.privacy.check_budget(round_number)
        for attempt in range(fed.max_round_retries + 1):
            record = self._attempt_round(round_number, attempt, last=attempt == fed.max_round_retries)
            if record is not None:
                return record
            if attempt < fed.max_round_retries:
                log.warning("round %d: retrying (%d/%d)", round_number, attempt + 1, fed.max_round_retries)
        raise CrossfedError(
            f"round {round_number}: fewer than federation.min_clients={self._min_clients()} clients returned an "
            f"update in {fed.max_round_retries + 1} attempt(s); see the client errors in the log"
        )

    def _attempt_round(self, round_number: int, attempt: int, *, last: bool = True) -> dict | None:
        """The steps in order; None when the round is to be retried: too few clients answered, or (unless
        this is the `last` attempt) too few updates passed validation."""
        started = time.perf_counter()
        rejoined = self.rejoin()
        sampled = self.sample(round_number)
        fits = self.broadcast(sampled, round_number, retry=attempt > 0)
        collected = self.collect(fits, round_number)
        fit_wall_s = time.perf_counter() - started
        if len(collected.payloads) < self._min_clients():
            log.warning("round %d: %d of %d sampled clients returned an update (min_clients=%d)", round_number,
                        len(collected.payloads), len(sampled), self._min_clients())
            return None
        aggregation_started = time.perf_counter()
        updates = collected.updates()
        accepted, rejected = self.validate(updates)
        if len(accepted) < self._min_clients():
            if not last:
                log.warning("round %d: %d of %d updates passed validation (min_clients=%d)", round_number,
                            len(accepted), len(updates), self._min_clients())
                return None
            log.warning("round %d: %d of %d updates passed validation in the last attempt; the round goes on "
                        "with %s", round_number, len(accepted), len(updates),
                        "them" if accepted else "no update: the global model stays as it was")
        if accepted:
            updates, noise = self.privatise(accepted, round_number)
            new_global = self.aggregate(updates, noise)
        else:
            new_global = self.global_state
        aggregation_s = time.perf_counter() - aggregation_started
        # Under DP no validation metric leaves a client unless it is to be released noised (or unprotected).
        protected = self._protects_clients()
        evaluated = periodic_round(round_number, self.config.federation.evaluate_every, len(self.plan.steps_per_round))
        released = evaluated and not (protected and not self.privacy.releases_metrics)
        evaluations, evaluation_footprints = self.evaluate(new_global) if released else ({}, {})
        footprints = round_footprints(collected.payloads, evaluation_footprints)
        record = {
            "round": round_number,
            "clients/sampled": len(sampled),
            "clients/updated": len(accepted),
            "clients/dropped": len(collected.dropped),
            "clients/rejected": len(rejected),
            "clients/rejoined": len(rejoined),
            "round/attempt": attempt,
            **self._traffic_and_time(sampled, collected, new_global, fit_wall_s, aggregation_s),
            **self._metric_record(collected.payloads, evaluations, footprints),
        }
        if protected:
            record = self._protected_record(round_number, evaluations if released else None)
        if self.privacy is not None:
            record["privacy/epsilon"] = float(self.privacy.epsilon())
            record["privacy/delta"] = self.config.federation.privacy.delta
        last_round = len(self.plan.steps_per_round)
        adopt = self.commit if periodic_round(round_number, self.config.checkpoint.every, last_round) else self.advance
        adopt(round_number, new_global, record, footprints, round_started=None if protected else started)
        return record

    def _min_clients(self) -> int:
        if not self.plan.federated:
            return 1
        needed = min(self.config.federation.min_clients, len(self.plan.clients))
        if self.privacy is not None:  # Poisson: a round runs with whoever was drawn; redrawing would bias q
            needed = min(needed, len(self.privacy.draw(list(self.clients), self.recovery.completed_rounds + 1)))
        return needed

    def rejoin(self) -> list[str]:
        """0. Recreate every lost client (its actor died) as a new actor and resynchronise it: it restores
        its last checkpoint (`RecoveryState.client_rounds`) and loads the global model, as a client whose
        worker died does. A client that cannot be started yet (its node group is still releasing the dead
        actor's workers, or is gone) stays lost, and the round goes on without it. The names that rejoined."""
        import ray

        rejoined = []
        self.recovery.idle(list(self.clients))  # a straggler whose fit ended with its actor's death is lost too
        if self.recovery.lost:
            self.wait_for_commit()  # a new actor restores the newest checkpoint of its client
        for name, why in list(self.recovery.lost.items()):
            with contextlib.suppress(Exception):
                ray.kill(self.clients[name], no_restart=True)  # whatever is left of the old actor
            placement.remove_and_wait(self.client_groups.pop(name, None))  # outlives its actor otherwise
            client = client_actor_class().options(**self.client_options[name]).remote(*self.client_args[name])
            try:
                self.client_groups[name] = ray.get(client.start.remote(self.run_key))
                ray.get(client.restore.remote(self.recovery.client_rounds.get(name), self.global_state))
                if self.monitoring_system:
                    ray.get(client.monitor_system.remote())
            except Exception as err:  # noqa: BLE001 - tried again at the next round
                log.warning("client %s (lost: %s) could not be restarted yet: %s", name, why, err)
                with contextlib.suppress(Exception):
                    ray.get(client.shutdown.remote(), timeout=60)
                ray.kill(client, no_restart=True)
                continue
            log.warning("client %s rejoined (a new actor, from its round-%s checkpoint) after: %s", name,
                        self.recovery.client_rounds.get(name), why)
            self.clients[name] = client
            del self.recovery.lost[name]
            rejoined.append(name)
        return rejoined

    def sample(self, round_number: int) -> list[str]:
        """1. The clients that train this round: idle ones, `clients_per_round` of them if set. Under DP the
        Poisson draw over all clients (the same in every attempt of the round), less the busy ones."""
        idle = self.recovery.idle(list(self.clients))
        if self.privacy is not None:
            return [name for name in self.privacy.draw(list(self.clients), round_number) if name in idle]
        wanted = self.config.federation.clients_per_round if self.plan.federated else None
        return sample_clients(idle, wanted, self.config.seed, round_number)

    def broadcast(self, sampled: list[str], round_number: int, *, retry: bool = False) -> dict:
        """2. Start local training on the sampled clients; {fit ObjectRef: client}. The global weights go
        into the object store once; every rank fetches them itself. A retry first puts each client back to
        its last checkpoint, as the first attempt found it."""
        import ray

        checkpoint_of = self.recovery.client_rounds
        if retry:
            self.wait_for_commit()
            ray.get([self.clients[name].restore.remote(checkpoint_of.get(name), self.global_state)
                     for name in sampled])
        steps = self.plan.steps_per_round[round_number - 1]
        proximal_mu = float(self.strategy.client_options().get("proximal_mu", 0.0)) if self.strategy else 0.0
        global_ref = ray.put(self.global_state)
        options = self._fit_privacy_options()
        return {
            self.clients[name].fit.remote([global_ref], self.plan.shared, steps, proximal_mu, checkpoint_of.get(name),
                                          **options): name
            for name in sampled
        }

    def _fit_privacy_options(self) -> dict:
        """Under DP each client clips its update before sending it, and sends no metrics unless
        `per_client_metrics` (FederationClient.fit)."""
        if self.privacy is None:
            return {}
        cfg = self.config.federation.privacy
        return {"privacy": {"clip_norm": cfg.clip_norm, "metrics": cfg.per_client_metrics}}

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
                collected.dropped[name] = self.recovery.lost[name] = f"client actor died: {type(err).__name__}"
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
        """4. (accepted updates, [(client, why rejected)]). Too few accepted is the round's to handle
        (retry, then go on with those accepted). A baseline's single update is taken as it is. Under DP the
        driver clips every update before checking it, and checks each alone (no norm comparison between
        clients; federation/privacy.py)."""
        if self.strategy is None:
            return updates, []
        from crossfed.federation.validation import validate_updates

        if self.privacy is not None:
            updates = self.privacy.clip(self.global_state, updates)
        size = Layout.of(self.global_state).size
        if self.update_rows.shape[1:] != (size,) or len(self.update_rows) < len(updates):
            self.update_rows = np.empty((max(len(self.clients), len(updates)), size), np.float32)
        accepted, rejected = validate_updates(self.global_state, updates, self.config.federation.validation,
                                              compare_norms=self.privacy is None, rows=self.update_rows)
        for name, why in rejected:
            log.warning("rejected update from %s: %s", name, why)
        return accepted, rejected

    def privatise(self, updates: list[ClientUpdate], round_number: int):
        """5. Central DP: (the updates clipped, all weighted alike; the noise for the aggregate delta: the
        mean over the expected number of clients, plus Gaussian noise from OS entropy, so nothing logged
        regenerates it). Without DP: (updates, None)."""
        if self.privacy is None:
            return updates, None
        return self.privacy.privatize(self.global_state, updates), self.privacy.perturbation(len(updates))

    def aggregate(self, updates: list[ClientUpdate], noise=None) -> State:
        """6. The next global weights: the strategy's aggregate (noised by `noise` before its server step);
        a baseline's single client's weights as they are."""
        if self.strategy is None:
            return dict(updates[0].state)
        return self.strategy.aggregate(self.global_state, updates, perturb_delta=noise)

    def evaluate(self, new_global: State) -> tuple[dict[str, dict], dict[str, dict]]:
        """7. {client: validation metrics} of the new global model on every idle client, within the timeout,
        and {client: the evaluation's footprint}. A client whose actor dies meanwhile is lost: left out
        here, and of the round's checkpoints."""
        import ray

        new_ref = ray.put(new_global)
        futures = {
            self.clients[name].evaluate.remote([new_ref], self.recovery.client_rounds.get(name)): name
            for name in self.recovery.idle(list(self.clients))
        }
        done, _ = wait_until(list(futures), self.config.federation.round_timeout_s)
        evaluations, footprints = {}, {}
        for ref in done:
            try:
                answer = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                self.recovery.lost[futures[ref]] = f"client actor died in evaluation: {type(err).__name__}"
                log.warning("client %s died in evaluation: %s", futures[ref], type(err).__name__)
                continue
            evaluations[futures[ref]] = answer["metrics"]
            if answer["footprint"] is not None:
                footprints[futures[ref]] = answer["footprint"]
        return evaluations, footprints

    def commit(self, round_number: int, new_global: State, record: dict | None,
               footprints: dict[str, dict] | None = None, *, round_started: float | None = None) -> None:
        """8. Checkpoint every idle client (a straggler keeps its older checkpoint, which a resume then
        restores), then write the driver's round files and the commit marker; only then does the round
        count: the recovery state moves to it, and checkpoints no kept round needs are removed.
        `record` None: round 0, the initial model (no record). `footprints`: {client: its footprint in this
        round}, added to the run's totals. `round_started` (time.perf_counter) stamps the record's
        `time/round_s`, the round up to its clients' snapshots.

        Each client's ranks snapshot their state at once; the rest (their uploads, the MANIFESTs, the
        driver's files, the marker) is written in the background while the next round trains
        (`checkpoint.background`), and the driver adopts the round in memory meanwhile, as `advance`
        does. Commits land in order: the next one, a retry, a rejoin, `state` and `finish` wait for it
        first (`wait_for_commit`), and raise its error. Written in the foreground (round 0, and by default),
        a commit that fails leaves the driver at the round before."""
        import ray

        self.wait_for_commit()
        idle = self.recovery.idle(list(self.clients))
        ray.get([self.clients[name].snapshot.remote(round_number) for name in idle])
        if record is not None and round_started is not None:
            record["time/round_s"] = time.perf_counter() - round_started
        history = [*self.history, record] if record is not None else list(self.history)
        totals = self._footprint_totals(footprints or {})
        driver_state = {
            "strategy": self.strategy.state_dict() if self.strategy is not None else {},
            "privacy": self.privacy.state_dict() if self.privacy is not None else {},
            # client sampling is drawn from (seed, round) (under DP sampling and noise come from OS
            # entropy, kept nowhere); the training RNGs are in each client's checkpoint
            "rng": {"seed": self.config.seed},
            "history": history,
            "footprints": totals,
        }
        pending = PendingCommit(round_number, functools.partial(self._write_commit, round_number, new_global,
                                                                driver_state, idle))
        if record is None or not self.background_commits:
            pending.run()
            self._committed(pending)
        else:
            pending.start()
            self.pending_commit = pending
        self.global_state = new_global
        self.history = history
        self.footprints = totals
        self.recovery.completed_rounds = round_number

    def _write_commit(self, round_number: int, new_global: State, driver_state: dict,
                      names: list[str]) -> dict[str, FileEntry]:
        """The files of a commit, marker last: each client's checkpoint completed (`FederationClient.save`),
        then the driver's. {client: its MANIFEST's entry}; a client whose workers died before its
        checkpoint was complete keeps its older one, as a straggler does."""
        import ray

        manifests = {}
        for name, ref in zip(names, [self.clients[name].save.remote(round_number) for name in names]):
            try:
                entry = ray.get(ref)
            except ray.exceptions.RayActorError:
                entry = None
            if entry is not None:
                manifests[name] = entry
            else:
                log.warning("round %d: client %s keeps its round-%s checkpoint (a worker died before this one "
                            "was complete)", round_number, name, self.recovery.client_rounds.get(name))
        # client_rounds moves only when a commit lands, and commits land one at a time
        recovery = self.recovery.at_commit(round_number, manifests)
        checkpoint.write_round(self.run, round_number, new_global, {**recovery.to_checkpoint(), **driver_state},
                               recovery.client_checkpoints())
        return manifests

    def _committed(self, pending: PendingCommit) -> None:
        """A commit's marker is written: the round counts."""
        self.recovery.committed(pending.round, pending.result)
        self.committed_round = pending.round
        self._prune(list(pending.result))

    def wait_for_commit(self) -> int:
        """Wait for the commit being written in the background, if any, and adopt it (its error is raised
        here); the last committed round. Old checkpoints are removed here, never while a round trains (a
        client rebuilding its workers may be reading one)."""
        with self.commit_lock:
            pending, self.pending_commit = self.pending_commit, None
            if pending is not None:
                pending.wait()
                self._committed(pending)
            return self.committed_round

    def advance(self, round_number: int, new_global: State, record: dict, footprints: dict[str, dict], *,
                round_started: float | None = None) -> None:
        """8'. A round between commits (`checkpoint.every`): the driver adopts it in memory only; the clients
        keep their last checkpoints. A resume starts from the last commit and runs this round again."""
        if round_started is not None:
            record["time/round_s"] = time.perf_counter() - round_started
        self.global_state = new_global
        self.history = [*self.history, record]
        self.footprints = self._footprint_totals(footprints)
        self.recovery.completed_rounds = round_number

    def _footprint_totals(self, footprints: dict[str, dict]) -> dict[str, dict]:
        """The run's footprint totals with a round's `footprints` added."""
        added = {name: add_footprints(self.footprints.get(name), footprint) for name, footprint in footprints.items()}
        return {**self.footprints, **added}

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
        compute_s = max((p["compute_s"] for p in collected.payloads.values()), default=0.0)
        return {
            "bytes/sent": state_nbytes(new_global) * len(sampled),
            "bytes/received": sum(state_nbytes(p["state"]) for p in collected.payloads.values()),
            "time/local_compute_s": compute_s,
            "time/transfer_s": max(0.0, fit_wall_s - compute_s),
            "time/aggregation_s": aggregation_s,
        }

    def _metric_record(self, payloads: dict, evaluations: dict, footprints: dict) -> dict[str, float]:
        record = {}
        for name, footprint in footprints.items():
            for key, value in footprint.items():
                record[f"client/{name}/round_{key}"] = value
        for name, payload in payloads.items():
            record[f"client/{name}/num_examples"] = payload["num_examples"]
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

    def _protected_record(self, round_number: int, evaluations: dict[str, dict] | None) -> dict[str, float]:
        """The record under DP: the round and, with `metric_noise_multiplier` in an evaluated round
        (`evaluations` not None), the global validation metrics as noised means over all clients (counted by
        the accountant: a round without evaluation releases nothing and spends no ε on metrics)."""
        record = {"round": round_number}
        if self.privacy.releases_metrics and evaluations is not None:
            from crossfed.federation.rounds import validation_metric_keys

            means = self.privacy.noised_metric_means(evaluations, validation_metric_keys(self.config))
            record.update({f"global/val_{key}": value for key, value in means.items()})
        return record

    # -- the end --------------------------------------------------------------------------------------
    def finish(self) -> dict:
        """Write the final global state and have each client export its full model; return their paths
        and each client's footprint over the committed rounds, across resumes (its training and evaluation;
        none under DP: it would tell how often each client took part). A client
        lost in the last round rejoins first (from its last checkpoint and the final global model); one that
        cannot is left out, with a warning."""
        import ray

        self.wait_for_commit()
        path = self.run.url("global_final.npz")
        save_state(path, self.global_state)
        self.rejoin()
        for name, why in self.recovery.lost.items():
            log.warning("client %s exports no final model: %s", name, why)
        exporting = {name: client.export_model.remote() for name, client in self.clients.items()
                     if name not in self.recovery.lost}  # all at once: each at its own site
        client_models = dict(zip(exporting, ray.get(list(exporting.values()))))
        footprints = {} if self._protects_clients() else self.footprints
        return {"global_state_path": path, "client_models": client_models, "footprints": footprints}

    def shutdown(self) -> None:
        import ray

        # Clients stopped while their workers still start (bad data found meanwhile): let the starts end
        # first, or a placement group reserved after its client's shutdown would outlive the client.
        wait_until(list(self.client_starts.values()), placement.READY_TIMEOUT_S)
        for name, client in self.clients.items():
            if name in self.recovery.lost:  # dead: its placement group outlives it unless removed here
                placement.remove_and_wait(self.client_groups.get(name), timeout_s=0)
                continue
            try:
                ray.get(client.shutdown.remote(), timeout=60)
            except Exception as err:  # noqa: BLE001 - tear down the rest anyway
                log.warning("client shutdown: %s", err)
            ray.kill(client, no_restart=True)


def driver_actor_class():
    import ray

    return ray.remote(num_cpus=0, max_concurrency=4)(FederationDriver)
