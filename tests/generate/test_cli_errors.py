"""Bad input through the real `crossfed generate` command: exit 2, one line, no traceback, no file left."""

import shutil
import socket
import subprocess

import pytest


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("crossfed"), "generate", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--process", "ttbarr"], "unknown process 'ttbarr'; known processes: hplus, single_top, ttbar"),
        (["--process", "ttbar", "--pythia", "Top:gg2ttbar = on", "--pythia", "Top:notASetting = on"],
         "Pythia rejected the setting 'Top:notASetting = on'"),
        (["--process", "ttbar", "--pythia", "25:m0 = lots"], "Pythia rejected the setting '25:m0 = lots'"),
        (["--process", "ttbar", "--pythia", "Top:gg2ttbar = maybe"], "Pythia rejected the setting 'Top:gg2ttbar = maybe'"),
        (["--process", "ttbar", "--detector", "lhcb"], "unknown detector 'lhcb'"),
        (["--process", "custom", "--pythia", "Top:gg2ttbar = off"], "Pythia could not initialise"),  # no process on
        (["--process", "ttbar", "--address", "127.0.0.1:{free_port}"], "cannot reach the Ray cluster at 127.0.0.1:"),
        (["--process", "ttbar", "--address", "nowhere"], "Ray address 'nowhere': expected HOST:PORT"),
    ],
)
def test_bad_request_is_one_line(tmp_path, args, message):
    out = tmp_path / "events.root"
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    result = _run(*[a.format(free_port=free_port) for a in args], "--events", "5", "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_non_positive_event_count(tmp_path):
    out = tmp_path / "events.root"
    result = _run("--process", "ttbar", "--events", "0", "--out", str(out))
    assert result.returncode == 2 and "positive" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and not out.exists()


def test_unknown_storage_scheme(tmp_path):
    result = _run("--process", "ttbar", "--events", "5", "--out", "nosuchscheme://bucket/events.root")
    assert result.returncode == 2 and "nosuchscheme://bucket/events.root" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_unwritable_output(tmp_path):
    not_a_folder = tmp_path / "a_file"
    not_a_folder.write_text("x")
    out = not_a_folder / "events.root"
    result = _run("--process", "ttbar", "--events", "5", "--out", str(out))
    assert result.returncode == 2 and "does not exist" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not out.exists()


def test_failure_while_writing_leaves_no_half_file(tmp_path, monkeypatch):
    """The final write fails: no temporary file, no target; the finished chunks stay and the rerun uses them."""
    from crossfed.errors import CrossfedError
    from crossfed.generate import core, writer

    real_writer = writer.write_branches

    def broken_writer(path, detector, branches, metadata):
        if "chunk" in path.name:  # the chunks are written fine, the final file is not
            return real_writer(path, detector, branches, metadata)
        path.write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "write_branches", broken_writer)
    out = tmp_path / "events.root"
    with pytest.raises(CrossfedError, match="No space left on device"):
        core.generate("ttbar", "cms", 2, 1, out, workers=1, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [".events.root.chunks"]  # finished chunks only
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.setattr(writer, "write_branches", real_writer)
    summary = core.generate("ttbar", "cms", 2, 1, out, workers=1, progress=False)
    assert summary["resumed_chunks"] == 1 and [p.name for p in tmp_path.iterdir()] == ["events.root"]


def test_recipe_with_unknown_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\noutput_dir: out\ncolision_data: {events: 10}\n")
    result = _run("--recipe", str(recipe))
    assert result.returncode == 2 and "colision_data: unknown key" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_preselection_that_accepts_nothing(tmp_path, monkeypatch):
    """Minimum-bias events never have a lepton and a b-jet: a clear error instead of an endless loop."""
    from crossfed.errors import CrossfedError
    from crossfed.generate import core

    monkeypatch.setattr(core, "EARLY_GIVE_UP", 20)
    monkeypatch.setattr(core, "BATCH_EVENTS", 10)  # it gives up at the first batch boundary past 20 events
    out = tmp_path / "minbias.root"
    with pytest.raises(CrossfedError, match="preselection accepted only 0 of 30 generated events; use --no-preselection"):
        core.generate("custom", "cms", 3, 1, out, workers=1, progress=False, pythia_settings=["SoftQCD:nonDiffractive = on"])
    assert list(tmp_path.iterdir()) == []
