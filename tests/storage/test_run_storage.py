"""The run storage and the commit protocol, on a local folder and on a real S3 endpoint (moto's server on
127.0.0.1 through s3fs): files verified by checksum, rounds committed by their marker only, the last
`checkpoint.keep` rounds kept, and a damaged round named in one line."""

from __future__ import annotations

import numpy as np
import pytest

from crossfed.federation import checkpoint
from crossfed.federation.checkpoint import ClientCheckpoint, DamagedCheckpoint
from crossfed.federation.result import load_state, save_state
from crossfed.storage import STORAGE_ENV, DamagedFile, FileEntry, Storage, storage_root


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Storage:
    if request.param == "local":
        return Storage(str(tmp_path / "runs" / "run1"))
    bucket = request.getfixturevalue("s3_bucket")
    return Storage(f"s3://{bucket}/runs/run1")


def test_storage_root_is_the_environment_variable_else_output_dir_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert storage_root("runs") == str(tmp_path / "runs")
    assert storage_root("s3://bucket/runs/") == "s3://bucket/runs"
    monkeypatch.setenv(STORAGE_ENV, "s3://site-bucket/crossfed")
    assert storage_root("runs") == "s3://site-bucket/crossfed"  # the deployment's say wins


def test_files_are_written_whole_and_verified_against_their_entry(store, tmp_path):
    entry = store.write_bytes("a/b.bin", b"0123456789")
    assert entry == FileEntry.of(b"0123456789") and store.read_verified("a/b.bin", entry) == b"0123456789"
    assert store.listdir() == ["a"] and store.listdir("a") == ["b.bin"] and store.listdir("nothing") == []
    store.write_bytes("a/b.bin", b"01234")
    with pytest.raises(DamagedFile, match=r"a/b.bin: truncated: 5 of 10 bytes"):
        store.read_verified("a/b.bin", entry)
    store.write_bytes("a/b.bin", b"")
    with pytest.raises(DamagedFile, match=r"a/b.bin: empty: 0 of 10 bytes"):
        store.verify({"b.bin": entry}, "a")
    store.write_bytes("a/b.bin", b"9123456789")
    with pytest.raises(DamagedFile, match=r"a/b.bin: checksum mismatch"):
        store.verify({"a/b.bin": entry})
    store.remove("a")
    with pytest.raises(DamagedFile, match=r"a/b.bin: missing"):
        store.verify({"a/b.bin": entry})

    # A folder of one process's files goes up and comes back, each file checked.
    local = tmp_path / "rank0"
    (local / "client").mkdir(parents=True)
    (local / "client" / "x.pt").write_bytes(b"x" * 1000)
    (local / "latest").write_text("client")
    files = store.upload_folder(local, "round_00001")
    assert sorted(files) == ["client/x.pt", "latest"] and files["client/x.pt"].size == 1000
    back = tmp_path / "back"
    store.download_verified(files, back, "round_00001")
    assert (back / "client" / "x.pt").read_bytes() == b"x" * 1000
    store.write_bytes("round_00001/client/x.pt", b"x" * 999)
    with pytest.raises(DamagedFile, match=r"round_00001/client/x.pt: truncated: 999 of 1000 bytes"):
        store.download_verified(files, tmp_path / "again", "round_00001")

    # State dicts at a path or a URI alike.
    save_state(store.url("final.npz"), {"w": np.arange(3, dtype=np.float32)})
    np.testing.assert_array_equal(load_state(store.url("final.npz"))["w"], np.arange(3, dtype=np.float32))


def commit(run: Storage, round_number: int, clients: dict[str, int]) -> None:
    """Round k as the driver commits it, with client checkpoints of the given rounds (their MANIFESTs)."""
    named = {}
    for name, client_round in clients.items():
        store = run.child(f"clients/{name}")
        files = store.upload_folder(_folder_with(f"state of {name} at round {client_round}"),
                                    checkpoint.round_folder(client_round))
        named[name] = ClientCheckpoint(client_round, checkpoint.write_manifest(store, client_round, files, ranks=1))
    state = {"backbone.w": np.full((2, 3), round_number, np.float32)}
    checkpoint.write_round(run, round_number, state, {"round": round_number, "history": list(range(round_number))},
                           named)


def _folder_with(text: str):
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp())
    (folder / "client").mkdir()
    (folder / "client" / "rank_0_trainer_state.pt").write_text(text)
    return folder


def test_a_round_counts_once_its_marker_is_written_and_only_the_last_k_are_kept(store):
    assert checkpoint.committed_rounds(store) == []
    for round_number in range(4):  # cms checkpoints every round; atlas was a straggler in rounds 2 and 3
        commit(store, round_number, {"cms": round_number, "atlas": min(round_number, 1)})
        needed = checkpoint.prune_rounds(store, keep=2)
    assert checkpoint.committed_rounds(store) == [3, 2]
    assert sorted(store.listdir("rounds")) == ["round_00002", "round_00003"]
    assert needed == {"cms": {2, 3}, "atlas": {1}}  # atlas's round-1 checkpoint is still named by round 3

    found = checkpoint.read_round(store, 3)
    assert found.round == 3 and found.driver_state["history"] == [0, 1, 2]
    np.testing.assert_array_equal(found.global_state["backbone.w"], np.full((2, 3), 3, np.float32))
    assert {name: c.round for name, c in found.clients.items()} == {"cms": 3, "atlas": 1}
    cms = store.child("clients/cms")
    files = checkpoint.read_manifest(cms, 3, found.clients["cms"].manifest)
    cms.verify(files, checkpoint.round_folder(3))

    # A crash after round 4's files, before its marker: round 4 does not count.
    store.write_bytes("rounds/round_00004/global.npz", b"half")
    assert checkpoint.committed_rounds(store) == [3, 2]


@pytest.mark.parametrize("kind, damage", [
    ("global.npz", "truncate"), ("driver.pkl", "empty"), ("COMMITTED", "truncate"), ("COMMITTED", "empty"),
])
def test_a_damaged_driver_file_or_marker_is_named(tmp_path, kind, damage):
    store = Storage(str(tmp_path / "run"))
    commit(store, 1, {"cms": 1})
    path = tmp_path / "run" / "rounds" / "round_00001" / kind
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"")
    with pytest.raises(DamagedCheckpoint) as err:
        checkpoint.read_round(store, 1)
    expected = "commit marker damaged" if kind == "COMMITTED" else \
        f"driver checkpoint damaged ({kind}: {'truncated' if damage == 'truncate' else 'empty'}: "
    assert str(err.value).startswith(expected), str(err.value)


def test_a_client_that_cannot_see_the_run_storage_says_so_before_training(samples, tmp_path):
    """A local output_dir on a cluster whose nodes share no disk: the client's node lacks the run folder the
    driver made. (The data check at a client's site reports the fingerprints of its own experiment's data
    only.)"""
    from crossfed.data.records import fingerprint as files_fingerprint
    from crossfed.config import ClusterConfig, config_from_dict
    from crossfed.errors import CrossfedError
    from crossfed.federation.client import FederationClient

    config = config_from_dict({"experiments": {
        name: {"schema": schema, "pretrain": {"files": [str(samples[name]["ttbar"])]}}
        for name, schema in (("cms", "cms_nanoaod"), ("atlas", "atlas_opendata"))}})
    run = Storage(str(tmp_path / "runs" / "run1"))
    client = FederationClient(config, "cms", ["cms"], ClusterConfig(), run.location, 4)
    with pytest.raises(CrossfedError, match=rf"client 'cms' \(node .*\) cannot see the run storage {run.location}: "
                                            "a local output_dir needs one machine or a disk every node mounts"):
        client.check_storage()
    run.write_json(checkpoint.RUN_FILE, {})
    client.check_storage()
    fingerprint = files_fingerprint([str(samples["cms"]["ttbar"])])
    problems, records = client.check_data()
    assert problems == [] and list(records) == ["cms.pretrain"] and records["cms.pretrain"]["digest"] == fingerprint
