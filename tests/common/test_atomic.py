"""crossfed.atomic: a file or folder is replaced whole or not at all, and no temporary is left behind."""

from __future__ import annotations

import pytest

from crossfed.atomic import temporary_sibling, write_atomically, write_text_atomically


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_file_is_written_and_replaced_whole(tmp_path):
    target = tmp_path / "sub" / "state.txt"
    write_text_atomically(target, "one")
    write_text_atomically(target, "two")
    assert target.read_text() == "two"
    assert leftovers(target.parent) == []


def test_a_folder_replaces_an_existing_folder(tmp_path):
    target = tmp_path / "round_00001"

    def write(version):
        def fill(folder):
            folder.mkdir()
            (folder / f"v{version}.npz").write_bytes(b"x" * version)
        return fill

    write_atomically(target, write(1))
    write_atomically(target, write(2))
    assert sorted(p.name for p in target.iterdir()) == ["v2.npz"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("as_folder", [False, True])
def test_an_error_while_writing_leaves_the_old_version_and_no_temporary(tmp_path, as_folder):
    target = tmp_path / "target"
    write_atomically(target, lambda t: t.mkdir() if as_folder else t.write_text("old"))

    def fails(temporary):
        if as_folder:
            temporary.mkdir()
            (temporary / "half").write_text("half")
        else:
            temporary.write_text("half")
        raise KeyboardInterrupt  # Ctrl-C in the middle of a write

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, fails)
    assert (target.is_dir() and list(target.iterdir()) == []) if as_folder else target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_temporaries_are_unique_unless_writers_share_a_tag(tmp_path):
    target = tmp_path / "checkpoint"
    assert temporary_sibling(target) != temporary_sibling(target)
    assert temporary_sibling(target, "partial") == temporary_sibling(target, "partial") == tmp_path / ".checkpoint.partial.tmp"
