"""Running a request's chunks: as Ray tasks (on the machine or across a cluster), resumably, under a progress bar.

Each task runs one chunk and, for a file being made, stores the chunk's events next to the output
(`Staging`), where any node can read them back; the driver then merges the chunks into the file. A
run that is interrupted leaves its finished chunks there, and the same request run again skips them.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import time
from typing import Iterator

from crossfed.errors import CrossfedError
from crossfed.generate import storage
from crossfed.generate.core import Chunk, run_chunk


class Staging:
    """The finished chunks of one request: <output folder>/.<file name>.chunks/<fingerprint>/.

    chunk-000012.root holds a chunk's events (numbered as in the final file); chunk-000012.json, written
    only after it, says the chunk is finished and holds its counts. Anything else there (a temporary file,
    events without their JSON) is unfinished and made again. Another request's chunks are discarded.
    """

    def __init__(self, out: str, key: str):
        self.root = storage.join(storage.parent(out), f".{storage.name(out)}.chunks")
        self.folder = storage.join(self.root, key)
        self.key = key

    def events(self, index: int) -> str:
        return storage.join(self.folder, f"chunk-{index:06d}.root")

    def summary(self, index: int) -> str:
        return storage.join(self.folder, f"chunk-{index:06d}.json")

    def prepare(self) -> dict[int, dict]:
        """Create the folder, drop other requests' chunks; the summaries of the chunks already finished."""
        for stale in storage.list_names(self.root):
            if stale != self.key:
                storage.remove_folder(storage.join(self.root, stale))
        storage.make_folder(self.folder)
        finished = {}
        for name in storage.list_names(self.folder):
            if name.startswith("chunk-") and name.endswith(".json"):
                summary = json.loads(storage.read_text(storage.join(self.folder, name)))
                finished[summary["index"]] = summary
        return finished

    def remove(self) -> None:
        storage.remove_folder(self.root)

    def remove_if_empty(self) -> None:
        if not any(name.endswith(".json") for name in storage.list_names(self.folder)):
            self.remove()


def produce_chunk(chunk: Chunk, staging: Staging | None) -> dict:
    """One chunk (the Ray task): its counts; with `staging`, its events stored there once it is complete."""
    from crossfed.generate.writer import write_root

    result = run_chunk(chunk)
    events = result.pop("events")
    summary = result | dict(accepted=len(events), node=_node_id())
    if staging is not None and len(events) >= (chunk.target_written or 0) > 0:
        storage.write_file(staging.events(chunk.index), lambda temporary: write_root(
            temporary, chunk.detector, events, dict(chunk=chunk.index), first_event=chunk.first_event))
        storage.write_text(staging.summary(chunk.index), json.dumps(summary))
    return summary


def _node_id() -> str | None:
    ray = sys.modules.get("ray")
    return ray.get_runtime_context().get_node_id() if ray and ray.is_initialized() else None


class ChunkRunner:
    """Runs chunks `workers` at a time, as Ray tasks or (`use_ray=False`) one by one in this process."""

    def __init__(self, workers: int, use_ray: bool, node_group: str | None):
        self.workers, self.use_ray, self.node_group = workers, use_ray, node_group
        self.resumed = 0

    def run(self, chunks: list[Chunk], staging: Staging | None, bar: "ChunkProgress", describe: str,
            total: int) -> list[dict]:
        """Every chunk's summary, in chunk order; chunks finished by an earlier run are not run again."""
        done = {i: s for i, s in staging.prepare().items() if i < len(chunks)} if staging else {}
        self.resumed += len(done)
        todo = [c for c in chunks if c.index not in done]
        counts_generated = chunks[0].target_written is None  # a pilot run: so many generated events
        bar.start(describe, total, counts_generated, list(done.values()))
        with contextlib.closing(self._in_ray(todo, staging) if self.use_ray else
                                (produce_chunk(c, staging) for c in todo)) as summaries:
            for summary in summaries:
                chunk = chunks[summary["index"]]
                if chunk.target_written and summary["accepted"] < chunk.target_written:
                    raise CrossfedError(
                        f"{describe}: the preselection accepted only {summary['accepted']} of {summary['generated']} "
                        f"generated events; use --no-preselection or another process")
                bar.advance(summary)
                done[chunk.index] = summary
        return [done[c.index] for c in chunks]

    def _in_ray(self, todo: list[Chunk], staging: Staging | None) -> Iterator[dict]:
        """Summaries as the tasks finish, keeping `workers` tasks in flight; unfinished ones are cancelled."""
        import ray

        from crossfed.federation.placement import EXPERIMENT_LABEL

        options = dict(num_cpus=1)
        if self.node_group:
            options["label_selector"] = {EXPERIMENT_LABEL: self.node_group}
        task = ray.remote(produce_chunk).options(**options)
        queue = iter(todo)
        pending = {task.remote(c, staging): c for c in itertools.islice(queue, self.workers)}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                pending.pop(ready[0])
                summary = _result(ready[0])
                following = next(queue, None)
                if following is not None:
                    pending[task.remote(following, staging)] = following
                yield summary
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


def _result(ref) -> dict:
    """A task's summary; a CrossfedError raised in the task comes back as the one-line error it was."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        from crossfed.federation.rounds import unwrap_ray_error

        raise unwrap_ray_error(err) from None


def needs_ray(workers: int | None, n_chunks: int, address: str | None, node_group: str | None) -> bool:
    """Ray unless there is one chunk or one worker on this machine and no cluster, node group or running Ray."""
    if workers is not None and workers < 1:
        raise CrossfedError(f"--workers must be at least 1, got {workers}")
    ray = sys.modules.get("ray")
    if address or os.environ.get("RAY_ADDRESS") or node_group or (ray and ray.is_initialized()):
        return True
    return min(workers or os.cpu_count() or 1, n_chunks) > 1


@contextlib.contextmanager
def chunk_runner(workers: int | None, n_chunks: int, address: str | None, node_group: str | None):
    """A ChunkRunner on Ray (an initialised one, `address`, RAY_ADDRESS, else an embedded one) when there is
    anything to spread, on a cluster or a node group; otherwise one that runs in this process."""
    from crossfed.ray_session import connect_ray

    if not needs_ray(workers, n_chunks, address, node_group):
        yield ChunkRunner(1, False, None)
        return
    with connect_ray(address, num_cpus=max(os.cpu_count() or 1, workers or 0), log_to_driver=False):
        cpus = _cpus(node_group)
        yield ChunkRunner(max(1, min(workers or cpus, n_chunks)), True, node_group)


def _cpus(node_group: str | None) -> int:
    """CPUs of the live nodes (of the node group's nodes, checked to exist: tasks would wait forever)."""
    import ray

    from crossfed.federation.placement import EXPERIMENT_LABEL

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if node_group:
        groups = sorted({n.get("Labels", {}).get(EXPERIMENT_LABEL, "-") for n in nodes})
        nodes = [n for n in nodes if n.get("Labels", {}).get(EXPERIMENT_LABEL) == node_group]
        if not nodes:
            raise CrossfedError(f"node group {node_group!r}: no Ray node carries the label "
                                f"{EXPERIMENT_LABEL}={node_group} (groups present: {', '.join(groups)})")
    cpus = int(sum(n["Resources"].get("CPU", 0) for n in nodes))
    if cpus < 1:
        raise CrossfedError(f"node group {node_group or '(any)'}: its Ray nodes have no CPU to generate on")
    return cpus


class ChunkProgress:
    """A rich progress bar over chunks: accepted (or, for a pilot, generated) events, and the rate."""

    def __init__(self, progress):
        self.progress, self.task, self.started = progress, None, time.monotonic()
        self.accepted = self.generated = self.accepted_now = self.generated_now = 0
        self.total, self.counts_generated = 0, False

    def start(self, describe: str, total: int, counts_generated: bool, resumed: list[dict]) -> None:
        self.total, self.counts_generated = total, counts_generated
        self.accepted = sum(s["accepted"] for s in resumed)
        self.generated = sum(s["generated"] for s in resumed)
        self.accepted_now = self.generated_now = 0
        self.started = time.monotonic()
        if self.progress is not None:
            self.task = self.progress.add_task(describe, total=total, completed=self._completed(),
                                               counts=self._counts())

    def advance(self, summary: dict) -> None:
        for name in ("accepted", "generated"):
            setattr(self, name, getattr(self, name) + summary[name])
            setattr(self, f"{name}_now", getattr(self, f"{name}_now") + summary[name])
        if self.progress is not None:
            self.progress.update(self.task, completed=self._completed(), counts=self._counts())

    def _completed(self) -> int:
        return self.generated if self.counts_generated else self.accepted

    def _counts(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = f"{self.accepted_now / elapsed:,.1f} accepted/s" if self.accepted_now else "- accepted/s"
        if self.counts_generated:
            return f"{self.generated:,}/{self.total:,} generated, {self.accepted:,} accepted, {rate}"
        return f"{self.accepted:,}/{self.total:,} accepted, {self.generated:,} generated, {rate}"


@contextlib.contextmanager
def progress_bar(enabled: bool):
    """A ChunkProgress drawing on stderr, or one that only counts."""
    if not enabled:
        yield ChunkProgress(None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[counts]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
    with progress:
        try:
            yield ChunkProgress(progress)
        except BaseException:
            progress.live.transient = True  # an error leaves its one line, not a half-full bar above it
            raise
