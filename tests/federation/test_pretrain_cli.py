"""`crossfed pretrain` as a user meets it: help, and user errors as one line with exit code 2 (no Ray started)."""

from __future__ import annotations

import subprocess
import sys

import yaml


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crossfed", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def write_config(tmp_path, samples) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "experiments": {"cms": {"schema": "cms_nanoaod", "pretrain": {"files": [str(samples["cms"]["ttbar"])]}}},
    }))
    return str(path)


def test_help_lists_the_options():
    done = run_cli("pretrain", "--help")
    assert done.returncode == 0
    for option in ("--mode", "--experiment", "--resume", "--set", "--address"):
        assert option in done.stdout


def test_user_errors_are_one_line_with_exit_code_2(tmp_path, samples):
    config = write_config(tmp_path, samples)
    cases = {
        ("--mode", "swarm"): "--mode 'swarm': expected one of federated, local, centralized",
        ("--mode", "local"): "local mode needs --experiment, one of cms",
        ("--mode", "local", "--experiment", "lhcb"): "local mode needs --experiment, one of cms (got 'lhcb')",
        ("--set", "federation.rounds=0"): "federation.rounds",
        ("--set", "federation.min_clients=2"): "federation.min_clients is 2 but only 1 experiment(s)",
        ("--set", "federation.privacy.enabled=true", "--set", "federation.privacy.target_epsilon=1"):
            "federation.rounds=5 would spend ε=",
    }
    for extra, message in cases.items():
        done = run_cli("pretrain", config, *extra, cwd=tmp_path)
        assert done.returncode == 2, (extra, done.stderr)
        assert message in done.stderr, (extra, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()  # nothing half-written
