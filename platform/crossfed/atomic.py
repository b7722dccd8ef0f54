"""Atomic writes of files and folders: a reader, a crash or a Ctrl-C never sees half of one.

The new version is written under a hidden temporary name beside the target (same folder, so the same
file system), flushed to disk, then renamed over the target; the folder's entry is flushed too. On any
error the temporary is removed and the target is left as it was.

- `write_atomically(target, write)`: `write(temporary)` creates a file or a folder at the path it is
  given; the usual entry point.
- `write_text_atomically(target, text)`: the same for a small text file.
- `temporary_sibling` + `move_into_place`: the two halves. (Checkpoints written by several processes do
  not need them: each rank puts its own files, and a commit marker makes the round count; see
  `crossfed.federation.checkpoint`.)
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path


def temporary_sibling(target: Path, tag: str | None = None) -> Path:
    """A hidden name beside `target` for its unfinished version: `.<name>.<tag>.tmp`.

    `tag` defaults to one unique to this call, so that concurrent writers of one target never share a
    temporary; writers that must share one (ranks of one checkpoint) pass the same tag.
    """
    tag = tag or f"{os.getpid()}-{secrets.token_hex(4)}"
    return target.with_name(f".{target.name}.{tag}.tmp")


def move_into_place(temporary: Path, target: Path) -> None:
    """Rename a finished file or folder over `target`, after flushing it to disk.

    A file replaces the target in one rename. A folder cannot be renamed over a non-empty folder, so an
    existing one is first renamed aside and removed afterwards: at every moment either the old or the
    new folder is complete under some name.
    """
    _flush(temporary)
    if temporary.is_dir() and target.is_dir():
        aside = temporary_sibling(target, "old")
        discard(aside)
        os.replace(target, aside)
        os.replace(temporary, target)
        discard(aside)
    else:
        os.replace(temporary, target)
    _flush_entry(target.parent)


def discard(path: Path) -> None:
    """Remove a file or folder if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_atomically(target: str | Path, write: Callable[[Path], None]) -> None:
    """Have `write(temporary)` create the new file or folder, then move it over `target`.

    The parent folder is created if needed. Any exception from `write` or the move leaves `target`
    untouched and no temporary behind, and propagates.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(target)
    try:
        write(temporary)
        move_into_place(temporary, target)
    except BaseException:
        discard(temporary)
        raise


def write_text_atomically(target: str | Path, text: str) -> None:
    write_atomically(target, lambda temporary: temporary.write_text(text))


def _flush(path: Path) -> None:
    """fsync a file, or every file in a folder and the folders themselves: the data reaches the disk
    before the rename that publishes it (else a power cut can leave a complete-looking empty file)."""
    if path.is_dir():
        for folder, _, files in os.walk(path):
            for name in files:
                _fsync(Path(folder) / name, os.O_RDONLY)
            _flush_entry(Path(folder))
    else:
        _fsync(path, os.O_RDONLY)


def _flush_entry(folder: Path) -> None:
    _fsync(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync(path: Path, flags: int) -> None:
    try:
        handle = os.open(path, flags)
    except OSError:  # e.g. a folder cannot be opened on this platform: nothing to flush through
        return
    try:
        os.fsync(handle)
    except OSError:  # file systems that cannot fsync (some network mounts) still get the atomic rename
        pass
    finally:
        os.close(handle)
