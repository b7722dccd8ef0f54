"""Run storage: where a run keeps what outlives its processes (checkpoints, round records, exported models).

One location per installation, as Ray Train's `storage_path`: a local folder (`output_dir`, default
`runs` in the working directory) or any fsspec URI (`s3://bucket/runs`, `gs://…`). The environment
variable CROSSFED_STORAGE overrides `output_dir`: the Kubernetes chart sets it in every Ray container,
together with AWS_ENDPOINT_URL and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, which
s3fs (the `s3` extra) reads.

Nothing here assumes that two processes see the same disk. Every writer puts its own files into the store
from its own node (a DeepSpeed rank its own shard), every reader fetches what it needs, and each file is
described by a `FileEntry` (size and SHA-256) so that a reader can verify it before using it. A small
file written with `write_bytes` appears whole or not at all (an S3 PUT; locally, written beside and
renamed); bigger ones need no such care, because nothing uses a file that a commit marker does not list
with its checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from crossfed.errors import CrossfedError

STORAGE_ENV = "CROSSFED_STORAGE"
_BLOCK = 8 << 20


def is_uri(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def storage_root(output_dir: str) -> str:
    """The run storage: CROSSFED_STORAGE if set, else `output_dir`; a local folder made absolute here, in
    the process that starts a run, so that every actor is given the same place."""
    location = os.environ.get(STORAGE_ENV) or output_dir
    if is_uri(location):
        return location.rstrip("/")
    return str(Path(location.removeprefix("file://")).expanduser().resolve())


@dataclass(frozen=True)
class FileEntry:
    """What a file must be to be used: its size in bytes and the SHA-256 of its contents."""

    size: int
    sha256: str

    @classmethod
    def of(cls, data: bytes) -> FileEntry:
        return cls(len(data), hashlib.sha256(data).hexdigest())

    def problem(self, data_size: int, digest: str) -> str | None:
        """Why a file of that size and digest is not this one; None when it is."""
        if data_size != self.size:
            what = "empty" if data_size == 0 else "truncated" if data_size < self.size else "too long"
            return f"{what}: {data_size} of {self.size} bytes"
        if digest != self.sha256:
            return "checksum mismatch"
        return None


def entries_to_json(files: dict[str, FileEntry]) -> dict:
    return {name: asdict(entry) for name, entry in sorted(files.items())}


def entries_from_json(raw: dict) -> dict[str, FileEntry]:
    return {name: FileEntry(int(entry["size"]), str(entry["sha256"])) for name, entry in raw.items()}


class Storage:
    """A folder of the run storage (`location`: an absolute path or a URI); names below it are relative,
    with '/' as separator."""

    def __init__(self, location: str):
        self.location = location.rstrip("/") if is_uri(location) else str(location)
        self.fs, self.path = filesystem(self.location)
        self.local = not is_uri(self.location)

    def __repr__(self) -> str:
        return f"Storage({self.location!r})"

    def child(self, name: str) -> Storage:
        return Storage(self.url(name))

    def url(self, name: str = "") -> str:
        return f"{self.location}/{name}" if name else self.location

    def _path(self, name: str) -> str:
        return f"{self.path}/{name}" if name else self.path

    # -- small files, written whole -----------------------------------------------------------------
    def write_bytes(self, name: str, data: bytes) -> FileEntry:
        """Write a file so that no reader ever sees part of it; its entry."""
        if self.local:
            from crossfed.atomic import write_atomically

            write_atomically(self._path(name), lambda temporary: temporary.write_bytes(data))
        else:
            self.fs.pipe_file(self._path(name), data)
        return FileEntry.of(data)

    def write_json(self, name: str, value) -> FileEntry:
        return self.write_bytes(name, json.dumps(value, indent=1, sort_keys=True).encode())

    def read_bytes(self, name: str) -> bytes:
        return self.fs.cat_file(self._path(name))

    def read_verified(self, name: str, entry: FileEntry) -> bytes:
        """The file's contents, or `DamagedFile` naming what is wrong with it."""
        try:
            data = self.read_bytes(name)
        except FileNotFoundError:
            raise DamagedFile(name, "missing") from None
        problem = entry.problem(len(data), hashlib.sha256(data).hexdigest())
        if problem:
            raise DamagedFile(name, problem)
        return data

    def exists(self, name: str = "") -> bool:
        self.fs.invalidate_cache(self._path(name))  # another process may have written it since we looked
        return self.fs.exists(self._path(name))

    def listdir(self, name: str = "") -> list[str]:
        """Names of the entries directly below `name` (none if it does not exist)."""
        path = self._path(name)
        self.fs.invalidate_cache(path)
        try:
            return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in self.fs.ls(path, detail=False))
        except FileNotFoundError:
            return []

    def remove(self, name: str = "") -> None:
        """Remove a file or a folder with everything below it, if there."""
        path = self._path(name)
        if self.local:
            target = Path(path)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
            return
        self.fs.invalidate_cache(path)
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    # -- whole folders: one process's part of a checkpoint -------------------------------------------
    def upload_folder(self, local: Path, name: str = "") -> dict[str, FileEntry]:
        """Put every file below the local folder `local` under `name`; {relative name: entry}, the
        names relative to `name`."""
        local = Path(local)
        files = {}
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            relative = file.relative_to(local).as_posix()
            files[relative] = hash_file(file)
            target = self._path(f"{name}/{relative}" if name else relative)
            self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(file), target)
        return files

    def download_verified(self, files: dict[str, FileEntry], local: Path, name: str = "") -> None:
        """Fetch `files` (names relative to `name`) into the local folder `local`, checking each against its
        entry; `DamagedFile` for the first that is missing or differs."""
        for relative, entry in files.items():
            target = Path(local) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            remote = f"{name}/{relative}" if name else relative
            try:
                self.fs.get_file(self._path(remote), str(target))
            except FileNotFoundError:
                raise DamagedFile(remote, "missing") from None
            actual = hash_file(target)
            problem = entry.problem(actual.size, actual.sha256)
            if problem:
                raise DamagedFile(remote, problem)

    def verify(self, files: dict[str, FileEntry], name: str = "") -> None:
        """Check `files` in place (streamed, nothing kept); `DamagedFile` for the first bad one."""
        for relative, entry in files.items():
            remote = f"{name}/{relative}" if name else relative
            digest, size = hashlib.sha256(), 0
            try:
                with self.fs.open(self._path(remote), "rb") as f:
                    while block := f.read(_BLOCK):
                        digest.update(block)
                        size += len(block)
            except FileNotFoundError:
                raise DamagedFile(remote, "missing") from None
            problem = entry.problem(size, digest.hexdigest())
            if problem:
                raise DamagedFile(remote, problem)


def filesystem(location: str):
    """(fsspec filesystem, path inside it); a missing driver or an unknown scheme is a one-line error."""
    import fsspec

    from crossfed import extras

    extras.url_driver(location)  # s3:// without s3fs names the extra to install
    try:
        return fsspec.core.url_to_fs(location)
    except ImportError as err:  # a protocol whose driver extras.py does not know
        scheme = location.split("://", 1)[0]
        raise CrossfedError(f"{location}: {scheme}:// needs a package that is not installed: {err}") from None
    except ValueError as err:
        raise CrossfedError(f"{location}: {err}") from None


class DamagedFile(CrossfedError):
    """A stored file that is missing or differs from the entry it was committed with."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name}: {problem}")
        self.name, self.problem = name, problem


def hash_file(path: Path) -> FileEntry:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return FileEntry(os.path.getsize(path), digest.hexdigest())


def _folder_and_name(url: str) -> tuple[str, str]:
    if is_uri(url):
        folder, name = url.rstrip("/").rsplit("/", 1)
        return folder, name
    path = Path(url.removeprefix("file://")).resolve()
    return str(path.parent), path.name


def write_file(url: str, data: bytes) -> None:
    """Write one whole file at a storage URI or a local path."""
    folder, name = _folder_and_name(url)
    Storage(folder).write_bytes(name, data)


def read_file(url: str) -> bytes:
    folder, name = _folder_and_name(url)
    return Storage(folder).read_bytes(name)
