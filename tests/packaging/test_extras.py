"""crossfed/extras.py: a missing optional package is one CrossfedError naming the extra to install."""

import sys

import pytest

from crossfed import extras
from crossfed.errors import CrossfedError


@pytest.mark.parametrize("load, module, extra", [
    (extras.pythia8mc, "pythia8mc", "generate"),
    (extras.fastjet, "fastjet", "generate"),
    (extras.optuna, "optuna", "optuna"),
    (extras.codecarbon, "codecarbon", "energy"),
    (extras.pynvml, "pynvml", "gpu"),
])
def test_a_missing_optional_module_names_its_extra(monkeypatch, load, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(CrossfedError) as caught:
        load()
    message = str(caught.value)
    assert f"pip install 'crossfed[{extra}]'" in message and module in message and "\n" not in message


def test_an_s3_url_without_s3fs_names_the_s3_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)
    with pytest.raises(CrossfedError, match=r"s3://bucket/a\.root.*pip install 'crossfed\[s3\]'"):
        extras.url_driver("s3://bucket/a.root")
    extras.url_driver("/local/a.root")  # local paths and other protocols need nothing
    extras.url_driver("https://host/a.root")


def test_installed_optional_modules_are_returned():
    assert extras.fastjet().ClusterSequence is not None
    assert extras.pythia8mc().Pythia is not None


def test_the_cli_prints_the_extra_in_one_line_with_exit_2(tmp_path):
    """Through the real CLI, with s3fs hidden: the message's brackets survive rich's markup."""
    import subprocess

    script = ("import sys; sys.modules['s3fs'] = None; sys.argv = ['crossfed', 'inspect', 's3://b/e.root', "
              "'--schema', 'cms_nanoaod']; from crossfed.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "s3://b/e.root" in done.stderr and "pip install 'crossfed[s3]'" in done.stderr
