"""Round checkpoints in the run storage, and the commit protocol that makes a round count.

Layout of a run, `<storage>/<run id>/` (`crossfed.storage`: a local folder or an fsspec URI):
  run.json                              what this folder is; written first, every client checks it can read it
  rounds/round_<k>/global.npz           the global shared state after round k
  rounds/round_<k>/driver.pkl           strategy and privacy state, history, the recovery state
  rounds/round_<k>/COMMITTED            the commit marker, written last (JSON): the round's files with their
                                        sizes and SHA-256, and for each client the round of its checkpoint
                                        and the size and SHA-256 of that checkpoint's MANIFEST
  clients/<name>/round_<j>/MANIFEST     a client's checkpoint: every rank's files with sizes and SHA-256,
                                        written by the client after its ranks have put their files
  clients/<name>/round_<j>/client/...   DeepSpeed's files and each rank's trainer state, each put by its rank
  clients/<name>/final_model/           the client's full model at the end (MLflow model folder), at its site
  global_final.npz                      the final global shared state

The commit of round k (`FederationDriver.commit`): every idle client writes its checkpoint (its ranks first,
its MANIFEST last); the driver writes global.npz and driver.pkl, then COMMITTED. The round counts from the
moment COMMITTED exists, and not before: whatever a crash leaves without a marker is ignored and later
overwritten. Only after the marker are older rounds removed: the driver's beyond `checkpoint.keep` (marker
first, so a half-removed round never looks committed), then each client's checkpoints that no kept marker
names. Every file is checked against its checksum before it is used, so a damaged round is skipped for
the newest intact one (`--resume`).

A commit written in the background (`checkpoint.background`: round k's files written while round k+1
trains) follows this protocol unchanged: its ranks snapshot their state first, and the round counts only
once its marker is written, after every file it lists.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass

import numpy as np

from crossfed.storage import DamagedFile, FileEntry, Storage, entries_from_json, entries_to_json

RUN_FILE = "run.json"
MARKER = "COMMITTED"
MANIFEST = "MANIFEST"
GLOBAL_FILE = "global.npz"
DRIVER_FILE = "driver.pkl"


def round_folder(round_number: int) -> str:
    return f"round_{round_number:05d}"


def npz_bytes(state: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    return buffer.getvalue()


def state_from_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as f:
        return {k: f[k] for k in f.files}


class DamagedCheckpoint(Exception):
    """A committed round that cannot be used; the message says whose part and what ("cms checkpoint
    damaged (client/mp_rank_00_model_states.pt: checksum mismatch)")."""


@dataclass(frozen=True)
class ClientCheckpoint:
    """Which checkpoint of a client a committed round relies on: its round, and its MANIFEST's entry."""

    round: int
    manifest: FileEntry


@dataclass
class RoundCheckpoint:
    round: int
    global_state: dict[str, np.ndarray]
    driver_state: dict
    clients: dict[str, ClientCheckpoint]


# -- the driver's side ----------------------------------------------------------------------------------
def write_round(run: Storage, round_number: int, global_state: dict, driver_state: dict,
                clients: dict[str, ClientCheckpoint]) -> None:
    """Commit round k: its files, then the marker that lists them with their checksums."""
    folder = round_folder(round_number)
    run.remove(f"rounds/{folder}/{MARKER}")  # a stale marker must never vouch for the new files
    files = {
        GLOBAL_FILE: run.write_bytes(f"rounds/{folder}/{GLOBAL_FILE}", npz_bytes(global_state)),
        DRIVER_FILE: run.write_bytes(f"rounds/{folder}/{DRIVER_FILE}", pickle.dumps(driver_state)),
    }
    marker = {
        "round": round_number,
        "files": entries_to_json(files),
        "clients": {name: {"round": c.round, "manifest": entries_to_json({MANIFEST: c.manifest})[MANIFEST]}
                    for name, c in sorted(clients.items())},
    }
    run.write_json(f"rounds/{folder}/{MARKER}", marker)


def committed_rounds(run: Storage) -> list[int]:
    """The rounds with a commit marker, newest first (whether their files are intact is `read_round`'s)."""
    rounds = []
    for name in run.listdir("rounds"):
        if name.startswith("round_") and name[6:].isdigit() and run.exists(f"rounds/{name}/{MARKER}"):
            rounds.append(int(name[6:]))
    return sorted(rounds, reverse=True)


def read_marker(run: Storage, round_number: int) -> tuple[dict[str, FileEntry], dict[str, ClientCheckpoint]]:
    """(the round's files, its clients' checkpoints) as its marker lists them."""
    try:
        marker = json.loads(run.read_bytes(f"rounds/{round_folder(round_number)}/{MARKER}"))
        files = entries_from_json(marker["files"])
        clients = {name: ClientCheckpoint(int(c["round"]), entries_from_json({MANIFEST: c["manifest"]})[MANIFEST])
                   for name, c in marker["clients"].items()}
    except FileNotFoundError:
        raise DamagedCheckpoint("commit marker missing") from None
    except (ValueError, KeyError, TypeError):
        raise DamagedCheckpoint("commit marker damaged (not the JSON a commit writes)") from None
    return files, clients


def read_round(run: Storage, round_number: int) -> RoundCheckpoint:
    """The driver's part of a committed round, every file checked against the marker first."""
    files, clients = read_marker(run, round_number)
    folder = f"rounds/{round_folder(round_number)}"
    try:
        global_data = run.read_verified(f"{folder}/{GLOBAL_FILE}", files[GLOBAL_FILE])
        driver_data = run.read_verified(f"{folder}/{DRIVER_FILE}", files[DRIVER_FILE])
    except DamagedFile as err:
        raise DamagedCheckpoint(f"driver checkpoint damaged ({err.name.rsplit('/', 1)[-1]}: {err.problem})") from None
    return RoundCheckpoint(round_number, state_from_npz(global_data), pickle.loads(driver_data), clients)


def remove_round(run: Storage, round_number: int) -> None:
    """Uncommit, then delete, a round of the driver's."""
    folder = f"rounds/{round_folder(round_number)}"
    run.remove(f"{folder}/{MARKER}")
    run.remove(folder)


def prune_rounds(run: Storage, keep: int) -> dict[str, set[int]]:
    """Remove the driver's committed rounds beyond the newest `keep`, and any uncommitted leftovers older
    than the newest commit; returns, per client, the rounds of its checkpoints that the kept rounds name
    (the client may delete every other one)."""
    committed = committed_rounds(run)
    kept, dropped = committed[:keep], committed[keep:]
    for round_number in dropped:
        remove_round(run, round_number)
    newest = committed[0] if committed else -1
    for name in run.listdir("rounds"):  # a crash between a round's files and its marker leaves these
        if name.startswith("round_") and name[6:].isdigit() and int(name[6:]) not in kept and int(name[6:]) < newest:
            run.remove(f"rounds/{name}")
    needed: dict[str, set[int]] = {}
    for round_number in kept:
        try:
            _, clients = read_marker(run, round_number)
        except DamagedCheckpoint:
            continue
        for name, checkpoint in clients.items():
            needed.setdefault(name, set()).add(checkpoint.round)
    return needed


# -- a client's side --------------------------------------------------------------------------------------
def merge_rank_files(per_rank: list[dict[str, FileEntry]]) -> dict[str, FileEntry]:
    """One manifest from each rank's files (every rank writes its own shard; a name twice is a bug)."""
    files: dict[str, FileEntry] = {}
    for rank, rank_files in enumerate(per_rank):
        for name, entry in rank_files.items():
            if name in files and files[name] != entry:
                raise RuntimeError(f"checkpoint file {name} written differently by two ranks (rank {rank})")
            files[name] = entry
    return files


def write_manifest(client_store: Storage, round_number: int, files: dict[str, FileEntry], ranks: int) -> FileEntry:
    return client_store.write_json(f"{round_folder(round_number)}/{MANIFEST}",
                                   {"round": round_number, "ranks": ranks, "files": entries_to_json(files)})


def read_manifest(client_store: Storage, round_number: int, entry: FileEntry | None = None) -> dict[str, FileEntry]:
    """The files of a client's checkpoint; the MANIFEST itself checked against `entry` when given."""
    name = f"{round_folder(round_number)}/{MANIFEST}"
    data = client_store.read_verified(name, entry) if entry is not None else _read_or_missing(client_store, name)
    try:
        return entries_from_json(json.loads(data)["files"])
    except (ValueError, KeyError, TypeError):
        raise DamagedFile(name, "not the JSON a checkpoint writes") from None


def _read_or_missing(store: Storage, name: str) -> bytes:
    try:
        return store.read_bytes(name)
    except FileNotFoundError:
        raise DamagedFile(name, "missing") from None
