"""Same recipe, same files: with 1 worker, 2 Ray workers, on a 2-node Ray cluster, and when killed mid-way."""

import os
import signal
import subprocess
import sys
import time

import awkward as ak
import pytest
import uproot

from crossfed.errors import CrossfedError
from crossfed.generate import core, generate, read_metadata
from crossfed.generate import tasks as generate_tasks
from crossfed.generate.recipe import make_recipe

RECIPE = """name: tiny
output_dir: data
seed: 3
detectors: [cms]
workers: {workers}
collision_data: {{events: 12, processes: [ttbar, single_top], pilot_events: 40}}
labelled: {{tth_vs_ttbar: {{signal: tth, background: ttbar, events: 8}}}}
"""
# Several chunks per file, cheaply (the driver plans the chunks, so this holds on Ray workers too).
SMALL_CHUNKS = {"CHUNK_EVENTS_MIN": 4, "PILOT_CHUNK_EVENTS": 20}


def _small_chunks(monkeypatch):
    for name, value in SMALL_CHUNKS.items():
        monkeypatch.setattr(core, name, value)


def _counting_chunks(monkeypatch) -> list:
    """Record the chunks run in this process (one worker runs them here)."""
    ran = []
    real = generate_tasks.run_chunk
    monkeypatch.setattr(generate_tasks, "run_chunk", lambda chunk: ran.append(chunk.index) or real(chunk))
    return ran


def _make(folder, workers, **options):
    folder.mkdir(exist_ok=True)
    (folder / "tiny.yaml").write_text(RECIPE.format(workers=workers))
    summaries = make_recipe(folder / "tiny.yaml", progress=False, **options)
    return folder / "data" / "cms", summaries


def _contents(folder) -> dict:
    """file name -> (events, metadata); nothing else may be left in the folder (no chunks, no temporaries)."""
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["collision_data.root", "ttbar.root", "tth.root"], names
    return {name: (uproot.open(folder / name)["Events"].arrays(), read_metadata(folder / name)) for name in names}


def _assert_same(one: dict, other: dict) -> None:
    assert one.keys() == other.keys()
    for name, (events, metadata) in one.items():
        other_events, other_metadata = other[name]
        assert metadata == other_metadata, name
        assert events.fields == other_events.fields and len(events) == len(other_events) > 0
        for field in events.fields:
            assert ak.all(ak.ravel(events[field]) == ak.ravel(other_events[field])), (name, field)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny recipe with one worker (in this process, no Ray), and how many chunks it ran."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _small_chunks(monkeypatch)
        ran = _counting_chunks(monkeypatch)
        folder, _ = _make(tmp_path_factory.mktemp("one-worker"), workers=1)
    return _contents(folder), len(ran)


def test_two_ray_workers_write_the_same_files(reference, tmp_path, monkeypatch):
    _small_chunks(monkeypatch)
    folder, summaries = _make(tmp_path, workers=2)
    _assert_same(reference[0], _contents(folder))
    assert {s["workers"] for s in summaries if "workers" in s} == {2}


def test_two_node_cluster_writes_the_same_files_and_pins_node_groups(reference, tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    from crossfed.federation.placement import EXPERIMENT_LABEL

    _small_chunks(monkeypatch)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = {group: cluster.add_node(num_cpus=1, labels={EXPERIMENT_LABEL: group}).node_id for group in ("cms", "atlas")}
    try:
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        folder, summaries = _make(tmp_path / "spread", workers=2)
        _assert_same(reference[0], _contents(folder))
        assert {n for s in summaries for n in s.get("nodes", [])} == set(nodes.values())  # both nodes worked

        pinned = generate("ttbar", "cms", 8, 5, tmp_path / "pinned.root", progress=False, node_group="atlas")
        assert pinned["nodes"] == [nodes["atlas"]] and pinned["workers"] == 1  # the group has one CPU
        with pytest.raises(CrossfedError, match="no Ray node carries the label crossfed.io/experiment=lhcb"):
            generate("ttbar", "cms", 8, 5, tmp_path / "nowhere.root", progress=False, node_group="lhcb")
        with pytest.raises(CrossfedError, match="^Pythia could not initialise"):  # raised in a task, one line here
            generate("custom", "cms", 8, 5, tmp_path / "bad.root", progress=False, workers=2,
                     pythia_settings=["Top:gg2ttbar = off"])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["pinned.root", "spread"]  # nothing left by failures
    finally:
        ray.shutdown()
        cluster.shutdown()


KILLABLE = """
import sys
from crossfed.generate import core
for name, value in {chunks}.items():
    setattr(core, name, value)
from crossfed.generate.recipe import make_recipe
make_recipe(sys.argv[1], progress=False)
"""


def test_killed_recipe_resumes_to_the_same_files(reference, tmp_path, monkeypatch):
    """SIGKILL after the first finished chunk; a half-written chunk is planted; the rerun ends identical."""
    (tmp_path / "tiny.yaml").write_text(RECIPE.format(workers=1))
    run = subprocess.Popen([sys.executable, "-c", KILLABLE.format(chunks=SMALL_CHUNKS), str(tmp_path / "tiny.yaml")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(tmp_path.rglob("chunk-*.json")):
        assert run.poll() is None, run.stderr.read()
        assert time.monotonic() < deadline, "no chunk finished in 5 minutes"
        time.sleep(0.05)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    finished = list(tmp_path.rglob("chunk-*.json"))
    staging = finished[0].parent
    unfinished = max(int(p.stem.split("-")[1]) for p in staging.glob("chunk-*.json")) + 1
    # Events without their JSON, as a kill between the two writes would leave them: never taken as finished.
    (staging / f"chunk-{unfinished:06d}.root").write_bytes(b"half a ROOT file")
    assert not (tmp_path / "data" / "cms" / "collision_data.root").exists()

    _small_chunks(monkeypatch)
    ran = _counting_chunks(monkeypatch)
    folder, _ = _make(tmp_path, workers=1)
    _assert_same(reference[0], _contents(folder))
    assert len(ran) <= reference[1] - len(finished)  # the finished chunks were not made again
