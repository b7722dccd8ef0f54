"""On-disk tensor cache: read a dataset's ROOT files once, reuse the padded arrays afterwards.

The key hashes everything the arrays depend on: each file's *content*, the schema's content (not its
name: editing a YAML schema invalidates), the selection, max_objects and max_events. Size + mtime is not
enough (a copied-over or regenerated file can keep both), so local files are hashed with SHA-256 in 8 MiB
blocks (about 1 GB/s, cheap next to decoding the ROOT file). Remote fsspec URLs are not downloaded twice to
be hashed: their key is the ROOT file's UUID (written at creation) together with the size fsspec reports.
A local file's hash is remembered in the cache folder (`fingerprints/`) with the file's identity as the
filesystem keeps it: device, inode, size, mtime and ctime. Copying over a file or regenerating it changes
its ctime, which no program can set back, so the hash is reused only for the very file it was computed
from; a file changed in the last seconds is not remembered (a change within the same clock tick would go
unseen, git's "racy" case). The site check, every rank and every later run then hash a file once.
Entries are written atomically (`crossfed.atomic`: a temporary file in the cache folder, then a rename),
so a crash or a concurrent reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from crossfed.atomic import write_atomically, write_text_atomically
from crossfed.data.events import EventBatch
from crossfed.data.files import expand_files
from crossfed.data.reader import ReadStats, read_events
from crossfed.data.schema import load_schema

# Bump when the reader's output changes meaning, to invalidate old entries. 2: object definitions, overlap
# removal, b-tag fallback, MET terms and rebuild; the stats carry object efficiencies and the sources used.
# 3: kinematics.py: pT = 0 objects get a finite η (their events are kept), E < |p| is raised to |p|.
CACHE_FORMAT = 3
_BLOCK = 8 << 20
RACY_S = 2.0  # a file whose ctime is this recent is hashed, not remembered


def file_fingerprint(path: str, cache_dir: str | Path | None = None) -> str:
    """The file's SHA-256 (remote: ROOT UUID and size); with `cache_dir`, remembered there (module doc)."""
    if "://" in path and not path.startswith("file://"):
        return _remote_fingerprint(path)
    local = path.removeprefix("file://")
    if cache_dir is None:
        return _hash_file(local)
    stat = os.stat(local)
    identity = f"{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"
    memo = Path(cache_dir) / "fingerprints" / hashlib.sha256(os.path.realpath(local).encode()).hexdigest()[:32]
    try:
        known, digest = memo.read_text().split()
        if known == identity:
            return digest
    except (OSError, ValueError):  # not remembered yet, or a damaged memo: hash again
        pass
    digest = _hash_file(local)
    if time.time() - stat.st_ctime > RACY_S:
        write_text_atomically(memo, f"{identity} {digest}")
    return digest


def _hash_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _remote_fingerprint(url: str) -> str:
    import fsspec
    import uproot

    fs, remote_path = fsspec.core.url_to_fs(url)
    with uproot.open(url) as root_file:
        uuid = str(root_file.file.uuid)
    return f"{uuid}:{fs.size(remote_path)}"


def cache_key(files: list[str], schema: str, selection: str | None, max_objects: int,
              max_events: int | None, cache_dir: str | Path | None = None) -> str:
    parts = {
        "format": CACHE_FORMAT,
        "files": [file_fingerprint(f, cache_dir) for f in expand_files(files)],
        "schema": load_schema(schema).model_dump(mode="json"),
        "selection": (selection or "").strip(),
        "max_objects": max_objects,
        "max_events": max_events,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def cached_read(files: list[str], schema: str, *, selection: str | None, max_objects: int,
                chunk_size: str | int, max_events: int | None, cache_dir: str | Path) -> tuple[EventBatch, ReadStats]:
    """`read_events` through the cache; the returned stats say `from_cache=True` on a hit (no ROOT opened)."""
    path = Path(cache_dir) / f"{cache_key(files, schema, selection, max_objects, max_events, cache_dir)}.npz"
    if path.is_file():
        with np.load(path) as stored:
            batch = EventBatch(stored["features"], stored["types"], stored["mask"])
            stats = ReadStats(**json.loads(str(stored["stats"])))
        stats.from_cache = True
        return batch, stats
    batch, stats = read_events(files, schema, selection=selection, max_objects=max_objects,
                               chunk_size=chunk_size, max_events=max_events)
    _write_entry(path, batch, stats)
    return batch, stats


def _write_entry(path: Path, batch: EventBatch, stats: ReadStats) -> None:
    def write(temporary: Path) -> None:
        with open(temporary, "wb") as f:
            np.savez(f, features=batch.features, types=batch.types, mask=batch.mask,
                     stats=np.array(json.dumps(stats.to_dict())))

    write_atomically(path, write)
