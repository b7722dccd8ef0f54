"""Finding and opening ROOT files, with one clear error per way a file can be wrong.

Local files are checked before uproot sees them, so that an empty file, a file that is not ROOT at all,
a truncated download and a directory each get their own message instead of uproot's internal one.
A ROOT file starts with the signature "root" and its header records the file's length (fEND): a file
shorter than that was cut off.
"""

from __future__ import annotations

import glob
import os
import struct

import uproot

from crossfed import extras
from crossfed.errors import CrossfedError, did_you_mean

TREE_CLASSES = ("TTree", "ROOT::RNTuple")


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def expand_files(patterns: list[str]) -> list[str]:
    """Local paths and globs become sorted existing files; a glob in an fsspec URL (``s3://bucket/cms/*.root``)
    is expanded on its file system (`fs.glob`) into sorted URLs; other URLs pass unchanged."""
    files: list[str] = []
    for pattern in patterns:
        if is_url(pattern):
            extras.url_driver(pattern)
            files += _expand_url(pattern) if glob.has_magic(pattern.split("://", 1)[1]) else [pattern]
            continue
        local = pattern.removeprefix("file://")
        if glob.has_magic(local):
            matches = sorted(m for m in glob.glob(local, recursive=True) if os.path.isfile(m))
            if not matches:
                raise CrossfedError(f"{pattern}: no file matches this pattern")
            files += matches
        elif os.path.isdir(local):
            raise CrossfedError(f"{local}: is a directory, not a ROOT file (give a glob such as "
                                f"{os.path.join(local, '*.root')})")
        elif not os.path.isfile(local):
            raise CrossfedError(f"{local}: no such file{_closest_sibling(local)}")
        else:
            files.append(local)
    return files


def _expand_url(pattern: str) -> list[str]:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(pattern)
        found = fs.glob(path, detail=True)
        matches = sorted(fs.unstrip_protocol(m) for m, info in found.items() if info.get("type") != "directory")
    except ImportError as err:  # the scheme's fsspec package (s3fs for s3://) is not installed
        raise CrossfedError(f"{pattern}: cannot list this URL ({err})") from None
    except Exception as err:  # noqa: BLE001 - network and permission errors of any file system
        raise CrossfedError(f"{pattern}: cannot list this URL ({first_line(err)})") from None
    if not matches:
        raise CrossfedError(f"{pattern}: no file matches this pattern")
    return matches


def _closest_sibling(path: str) -> str:
    """' (did you mean 'ttbar.root'?)' when the folder holds a file with a close name."""
    folder, name = os.path.split(path)
    try:
        siblings = os.listdir(folder or ".")
    except OSError:
        return ""
    return did_you_mean(name, siblings)


def check_root_header(path: str) -> None:
    """Raise the matching CrossfedError if a local file is empty, not ROOT or shorter than its header says."""
    if os.path.isdir(path):
        raise CrossfedError(f"{path}: is a directory, not a ROOT file")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            header = f.read(20)
    except FileNotFoundError:
        raise CrossfedError(f"{path}: no such file") from None
    except OSError as err:
        raise CrossfedError(f"{path}: cannot read the file ({err.strerror or err})") from None
    if size == 0:
        raise CrossfedError(f"{path}: empty file (0 bytes)")
    if not header.startswith(b"root"):
        raise CrossfedError(f"{path}: not a ROOT file (it does not start with the ROOT signature 'root')")
    if len(header) < 20:
        raise CrossfedError(f"{path}: truncated ROOT file ({size} bytes, shorter than a ROOT header)")
    version = struct.unpack(">i", header[4:8])[0]
    end = struct.unpack(">q", header[12:20])[0] if version >= 1000000 else struct.unpack(">i", header[12:16])[0]
    if size < end:
        raise CrossfedError(f"{path}: truncated ROOT file ({size} of {end} bytes)")


def open_root(path: str):
    if not is_url(path):
        check_root_header(path.removeprefix("file://"))
    try:
        return uproot.open(path)
    except FileNotFoundError:
        raise CrossfedError(f"{path}: no such file") from None
    except Exception as err:  # noqa: BLE001 - uproot raises many kinds for damaged files and network errors
        what = "cannot open this URL (unreachable, or not a ROOT file)" if is_url(path) else "damaged ROOT file"
        raise CrossfedError(f"{path}: {what} ({first_line(err)})") from None


def list_trees(root_file, path: str) -> list[str]:
    """Names (without ;cycle) of the TTrees and RNTuples in a file."""
    return sorted({key.split(";")[0] for key, cls in _classnames(root_file, path).items() if cls in TREE_CLASSES})


def _classnames(root_file, path: str) -> dict[str, str]:
    try:
        return root_file.classnames()
    except Exception as err:  # noqa: BLE001
        raise CrossfedError(f"{path}: corrupt ROOT file, cannot list its contents ({first_line(err)})") from None


def find_tree(root_file, path: str, tree_names: list[str]):
    """(name, tree) of the first of `tree_names` the file holds."""
    trees = list_trees(root_file, path)
    for name in tree_names:
        if name in trees:
            return name, read_tree(root_file, path, name)
    wanted = " or ".join(repr(n) for n in tree_names)
    has = ", ".join(repr(t) for t in trees) if trees else "no trees at all"
    raise CrossfedError(f"{path}: no tree {wanted}; the file has {has}")


def read_tree(root_file, path: str, name: str):
    try:
        return root_file[name]
    except Exception as err:  # noqa: BLE001
        raise CrossfedError(f"{path}: corrupt ROOT file, cannot read tree {name!r} ({first_line(err)})") from None


def describe_contents(path: str) -> list[tuple[str, str, int, list[tuple[str, str]]]]:
    """Every TTree and RNTuple of a file: (name, class, entries, [(branch or field, type), ...])."""
    with open_root(path) as root_file:
        contents, seen = [], set()
        for key, cls in sorted(_classnames(root_file, path).items()):
            name = key.split(";")[0]
            if cls not in TREE_CLASSES or name in seen:
                continue
            seen.add(name)
            tree = read_tree(root_file, path, name)
            branches = [(branch, _typename(tree[branch])) for branch in tree.keys()]
            contents.append((name, "RNTuple" if "RNTuple" in cls else "TTree", int(tree.num_entries), branches))
    return contents


def _typename(branch) -> str:
    try:
        return str(branch.typename)
    except Exception:  # noqa: BLE001 - a type uproot cannot name is still worth listing
        return "?"


def first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
