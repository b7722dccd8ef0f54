"""`crossfed pretrain --resume` on damaged checkpoints, as a user meets it: the damaged round named in one
line and the round before it resumed (ending with the same model as the run that was never damaged), or,
with nothing intact, one line and exit 2. Never a traceback, never "interrupted" without a signal."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from crossfed.config import config_from_dict
from crossfed.federation import checkpoint
from crossfed.federation.result import load_state
from crossfed.storage import Storage

TRAINER_STATE = "clients/cms/round_0000{}/client/rank_0_trainer_state.pt"


def resume(config_path, run_id, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crossfed", "pretrain", str(config_path), "--mode", "local",
                           "--experiment", "cms", "--resume", run_id], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def finished_run(samples, tmp_path_factory):
    """A finished 2-round local run of cms (1 worker, ZeRO-2) and its config file."""
    from crossfed.federation import run_federation

    root = tmp_path_factory.mktemp("resume-cli")
    raw = {
        "seed": 5,
        "output_dir": str(root / "runs"),
        "experiments": {"cms": {"schema": "cms_nanoaod", "pretrain": {"files": [str(samples["cms"]["ttbar"])]}}},
        "data": {"cache_dir": str(root / "cache")},
        "model": {"preset": "tiny"},
        "training": {"batch_size": 32, "eval_batches": 2, "zero_stage": 2, "device": "cpu", "steps": 4},
        "federation": {"rounds": 2},
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}"},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(raw))
    result = run_federation(config_from_dict(raw), mode="local", experiment="cms", run_name="damaged-later")
    return root, result


def test_an_empty_trainer_state_is_skipped_for_the_round_before_and_resume_ends_on_the_same_model(finished_run):
    root, result = finished_run
    run = Storage(result.run_dir)
    assert checkpoint.committed_rounds(run) == [2, 1]
    size = len(run.read_bytes(TRAINER_STATE.format(2)))
    run.write_bytes(TRAINER_STATE.format(2), b"")  # what once gave "error: interrupted", exit 130
    finished = [load_state(result.global_state_path), load_state(result.client_models["cms"])]

    done = resume(root / "run.yaml", result.run_id, root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (f"round 2: cms checkpoint damaged (round_00002/client/rank_0_trainer_state.pt: empty: 0 of {size} bytes); "
            "resuming from round 1") in done.stderr
    assert "Traceback" not in done.stderr and "interrupted" not in done.stderr
    assert checkpoint.committed_rounds(run) == [2, 1]  # round 2 computed again, and intact
    # The resumed run wrote its final models where the finished one had: the same, bit for bit.
    for expected, path in zip(finished, [result.global_state_path, result.client_models["cms"]]):
        actual = load_state(path)
        assert sorted(actual) == sorted(expected)
        for key in expected:
            np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def test_with_no_intact_round_left_resume_is_one_line_and_exit_2(finished_run):
    root, result = finished_run
    run = Storage(result.run_dir)
    for round_number in (1, 2):
        data = run.read_bytes(TRAINER_STATE.format(round_number))
        run.write_bytes(TRAINER_STATE.format(round_number), data[: len(data) // 2])
    done = resume(root / "run.yaml", result.run_id, root)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"error: cannot resume run {result.run_dir}: no intact committed round left (round 2: "
                               "cms checkpoint damaged (round_00002/client/rank_0_trainer_state.pt: truncated: ")
