"""`crossfed pretrain` as a user meets it: help, and user errors as one line with exit code 2 (no Ray started)."""

from __future__ import annotations

import subprocess
import sys

import pytest
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
        ("--set", "output_dir=nosuch://bucket/runs"): "nosuch://bucket/runs: Protocol not known: nosuch",
    }
    for extra, message in cases.items():
        done = run_cli("pretrain", config, *extra, cwd=tmp_path)
        assert done.returncode == 2, (extra, done.stderr)
        assert message in done.stderr, (extra, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()  # nothing half-written


def test_resume_with_a_changed_strategy_is_refused_naming_the_key_before_any_ray_starts(tmp_path, samples):
    from crossfed import tracking
    from crossfed.config import apply_overrides, config_from_dict, load_config, read_yaml
    from crossfed.errors import CrossfedError
    from crossfed.federation.rounds import check_resume_config

    config_path = write_config(tmp_path, samples)
    raw = apply_overrides(read_yaml(config_path), {"tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    with tracking.start_run(load_config(config_path), "logged", mode="federated") as run:
        run_id = run.info.run_id
    done = run_cli("pretrain", config_path, "--resume", run_id, "--set", "federation.strategy.name=fedavgm",
                   "--set", "federation.local_steps=3", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cannot resume run {run_id} with a different config: federation.local_steps (logged 20, now 3), "
        "federation.strategy.name (logged fedavg, now fedavgm); only name, output_dir, federation.rounds, "
        "federation.round_timeout_s, federation.max_round_retries, checkpoint.*, tracking.*, data.cache_dir may change"]
    assert not (tmp_path / "runs").exists()

    logged = tracking.find_run(run_id)
    more_rounds = config_from_dict(apply_overrides(raw, {"federation.rounds": 9, "checkpoint.keep": 3}))
    check_resume_config(more_rounds, logged)  # how long it goes on may change
    with pytest.raises(CrossfedError, match=r"training.zero_stage \(logged 0, now 3\)"):
        check_resume_config(config_from_dict(apply_overrides(raw, {"training.zero_stage": 3})), logged)
