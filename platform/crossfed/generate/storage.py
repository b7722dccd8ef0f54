"""Where generated files go: a local path or an fsspec URI (s3://bucket/key ...), never seen half-written.

Locations are plain strings. A local file is written next to its target and renamed into place; a
remote one is written to a local temporary file and uploaded in one PUT (an S3 object appears whole or
not at all). The storage's credentials and endpoint come from the environment, as for any fsspec
reader (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL ...), on every node that writes.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from pathlib import Path
from typing import Callable

from crossfed.errors import CrossfedError
from crossfed.storage import filesystem  # one fsspec entry point: one error for a missing s3fs


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def join(location: str, *parts: str) -> str:
    return posixpath.join(location, *parts) if is_uri(location) else str(Path(location, *parts))


def name(location: str) -> str:
    return posixpath.basename(location.rstrip("/")) if is_uri(location) else Path(location).name


def parent(location: str) -> str:
    return posixpath.dirname(location.rstrip("/")) if is_uri(location) else str(Path(location).parent)


def exists(location: str) -> bool:
    if not is_uri(location):
        return Path(location).exists()
    fs, path = filesystem(location)
    return fs.exists(path)


def list_names(folder: str) -> list[str]:
    """Names of the files directly in `folder` (none if it does not exist)."""
    if not is_uri(folder):
        return sorted(p.name for p in Path(folder).iterdir()) if Path(folder).is_dir() else []
    fs, path = filesystem(folder)
    fs.invalidate_cache(path)  # another node may have written there since we last looked
    try:
        return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))
    except FileNotFoundError:
        return []


def make_folder(folder: str) -> None:
    try:
        if is_uri(folder):
            fs, path = filesystem(folder)
            fs.makedirs(path, exist_ok=True)  # object stores have no folders: a no-op there
        else:
            Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CrossfedError(f"{folder}: cannot create the output folder: {err.strerror or err}") from None


def remove_folder(folder: str) -> None:
    """Delete a folder and what is in it; a folder that is already gone is fine."""
    if is_uri(folder):
        fs, path = filesystem(folder)
        if fs.exists(path):
            fs.rm(path, recursive=True)
        return
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def write_file(location: str, write: Callable[[Path], None]) -> None:
    """`write(local_path)`, then move the finished file to `location` in one step."""
    from crossfed.atomic import write_atomically

    if not is_uri(location):
        try:
            write_atomically(Path(location), write)
        except OSError as err:
            raise CrossfedError(f"{location}: cannot write: {err.strerror or err}") from None
        return
    fs, path = filesystem(location)
    with tempfile.TemporaryDirectory(prefix="crossfed-upload-") as scratch:
        local = Path(scratch) / name(location)
        write(local)
        try:
            fs.put_file(str(local), path)
        except (OSError, PermissionError) as err:
            raise CrossfedError(f"{location}: cannot write: {err}") from None


def write_text(location: str, text: str) -> None:
    write_file(location, lambda local: local.write_text(text))


def read_text(location: str) -> str:
    if not is_uri(location):
        return Path(location).read_text()
    fs, path = filesystem(location)
    with fs.open(path, "r") as file:
        return file.read()


def fetch(location: str, scratch: Path) -> Path:
    """A local path to read `location` from: itself, or a copy downloaded into `scratch`."""
    if not is_uri(location):
        return Path(location)
    fs, path = filesystem(location)
    local = scratch / name(location)
    fs.get_file(path, str(local))
    return local


def check_writable(location: str) -> None:
    """Fail now, not after hours of generation, if the file cannot be written where asked."""
    if not is_uri(location):
        out = Path(location)
        if out.is_dir():
            raise CrossfedError(f"{out}: is a directory; give a file name such as {out / 'events.root'}")
        if not out.parent.is_dir():
            raise CrossfedError(f"{out}: the folder {out.parent} does not exist")
        if not os.access(out.parent, os.W_OK):
            raise CrossfedError(f"{out}: the folder {out.parent} is not writable")
        return
    fs, path = filesystem(location)
    probe = f"{posixpath.dirname(path)}/.crossfed-write-test-{os.getpid()}"
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as err:  # noqa: BLE001 - each backend raises its own kinds; all mean "cannot write"
        raise CrossfedError(f"{location}: cannot write there: {type(err).__name__}: {err}") from None
