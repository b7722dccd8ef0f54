"""`pip install -e .` alone, no extras, in a fresh virtual environment: the core commands work, and the
optional parts (generate, s3:// paths) exit 2 with one line naming the extra to install.

The install resolves every core dependency (Ray, DeepSpeed, MLflow, ...) into an empty environment, which
takes minutes even from a local package mirror, so this runs only with CROSSFED_FRESH_VENV=1 (CI's
`.ci/run` stays within its time; run it before a release or after changing dependencies).
"""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest

from crossfed.config import config_from_dict

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.environ.get("CROSSFED_FRESH_VENV") != "1",
                                reason="a fresh-venv install takes minutes: set CROSSFED_FRESH_VENV=1")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A virtual environment (no system site-packages) with torch (CPU build) and `pip install -e .`."""
    root = tmp_path_factory.mktemp("fresh")
    venv.create(root / "venv", with_pip=True)
    python = str(root / "venv" / "bin" / "python")
    for args in (["torch==2.13.0"], ["-e", str(REPO)]):
        done = subprocess.run([python, "-m", "pip", "install", "-q", *args], capture_output=True, text=True,
                              timeout=1800)
        assert done.returncode == 0, done.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update(PATH=f"{root / 'venv' / 'bin'}{os.pathsep}{env['PATH']}", DS_ACCELERATOR="cpu")

    def crossfed(*args, check_rc: int | None = 0):
        done = subprocess.run([str(root / "venv" / "bin" / "crossfed"), *map(str, args)], cwd=root, env=env,
                              capture_output=True, text=True, timeout=900)
        if check_rc is not None:
            assert done.returncode == check_rc, (args, done.stdout[-3000:], done.stderr[-3000:])
        return done

    missing = subprocess.run([python, "-c", "import pythia8mc"], capture_output=True).returncode
    assert missing != 0, "the fresh environment must not have the generate extra"
    return dict(root=root, crossfed=crossfed)


def test_core_commands_work_without_extras(fresh, samples):
    root, crossfed = fresh["root"], fresh["crossfed"]
    assert "pretrain" in crossfed("--help").stdout
    schemas = {"cms": "cms_nanoaod", "atlas": "atlas_opendata"}
    config = config_from_dict({
        "experiments": {name: {"schema": schemas[name],
                               "pretrain": {"files": [str(samples[name]["ttbar"]), str(samples[name]["tth"])]},
                               "finetune": {"signal": {"files": [str(samples[name]["tth"])]},
                                            "background": {"files": [str(samples[name]["ttbar"])]}}}
                        for name in schemas},
        "data": {"max_objects": 12, "cache_dir": str(root / "cache")},
        "model": {"preset": "tiny"},
        "training": {"batch_size": 32, "lr": 0.05},
        "federation": {"rounds": 1, "local_steps": 2},
        "finetune": {"epochs": 1, "labelled_events": [64]},
        "output_dir": str(root / "runs"),
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "fresh"},
    })
    (root / "run.yaml").write_text(config.to_yaml())

    crossfed("validate", root / "run.yaml")
    assert "jets" in crossfed("inspect", samples["cms"]["ttbar"], "--schema", "cms_nanoaod").stdout
    crossfed("pretrain", root / "run.yaml")
    crossfed("finetune", root / "run.yaml", "-e", "cms")
    assert "pre-trainings" in crossfed("study", "ci", "--check").stdout  # the study's plan needs no extra
    missing = crossfed("report", "no-such-run", "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}", check_rc=2)
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr  # report runs; the run is not there


@pytest.mark.parametrize("args, extra", [
    (("generate", "--process", "ttbar", "--events", "10", "--out", "x.root"), "generate"),
    (("inspect", "s3://bucket/events.root", "--schema", "cms_nanoaod"), "s3"),
])
def test_optional_parts_name_their_extra(fresh, args, extra):
    done = fresh["crossfed"](*args, check_rc=2)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'crossfed[{extra}]'" in lines[0], done.stderr
