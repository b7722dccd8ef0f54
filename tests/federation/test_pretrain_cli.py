"""`crossfed pretrain` as a user meets it: help; user errors as one line with exit code 2, before any run or
folder exists; SIGTERM and SIGKILL mid-run, each continued with --resume, leaving no Ray process behind;
the models it names for fine-tuning."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
        ("--set", "federation.privacy.enabled=true", "--set", "federation.privacy.target_epsilon=1"):
            "federation.rounds=5 would spend ε=",
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


def test_a_non_root_data_file_is_refused_before_any_run_or_folder_exists(tmp_path):
    (tmp_path / "events.root").write_text("not a ROOT file\n")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "output_dir": "runs",
        "experiments": {"cms": {"schema": "cms_nanoaod", "pretrain": {"files": ["events.root"]}}},
    }))
    done = run_cli("pretrain", str(config), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: experiments.cms.pretrain.files: {tmp_path / 'events.root'}: not a ROOT file "
                      "(it does not start with the ROOT signature 'root')"], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()  # nothing half-written


# -- signals and kills: a run stopped any way continues with --resume, losing nothing it completed -------
def ray_session_processes(ray_tmpdir: str) -> list[str]:
    """Processes of the Ray sessions under `ray_tmpdir`: that folder on their command line or among their
    open files (Ray renames its processes, so names say nothing). By session folder, not by name."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if ray_tmpdir.encode() in (entry / "cmdline").read_bytes() or any(
                    os.readlink(fd).startswith(ray_tmpdir) for fd in (entry / "fd").iterdir()):
                found.append(f"{entry.name} {(entry / 'cmdline').read_bytes()[:80]!r}")
        except OSError:
            continue
    return found


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def only_line(text: str, wanted, what: str) -> str:
    """The one line of `text` for which `wanted(line)` holds (stripped); on none or several, the whole text."""
    lines = [line.strip() for line in text.splitlines() if wanted(line)]
    assert len(lines) == 1, f"{len(lines)} lines with {what} in:\n{text}"
    return lines[0]


def committed_round(runs: Path) -> int:
    """The newest round with a commit marker in the run storage (0: none yet, or only the initial model)."""
    return max((int(marker.parent.name.split("_")[1]) for marker in runs.glob("*/rounds/round_*/COMMITTED")),
               default=0)


def test_sigterm_then_sigkill_mid_round_each_resume_leave_no_ray_process_behind_and_models_finetune(tmp_path, samples):
    import mlflow

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "seed": 3, "output_dir": "runs",
        "experiments": {name: {"schema": schema, "pretrain": {"files": [str(samples[name]["ttbar"])]},
                               "finetune": {"signal": {"files": [str(samples[name]["tth"])]},
                                            "background": {"files": [str(samples[name]["ttbar"])]}}}
                        for name, schema in (("cms", "cms_nanoaod"), ("atlas", "atlas_opendata"))},
        "data": {"cache_dir": "cache"}, "model": {"preset": "tiny"},
        "training": {"batch_size": 32, "eval_batches": 2, "device": "cpu"},
        "federation": {"rounds": 4, "local_steps": 2},
        "finetune": {"epochs": 2, "batch_size": 32, "labelled_events": [40]},
    }))
    ray_tmpdir = tempfile.mkdtemp(prefix="cf", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = {**os.environ, "RAY_TMPDIR": ray_tmpdir}
    runs, store = tmp_path / "runs", mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "crossfed", *args], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

    def no_ray_process_left() -> bool:
        return not ray_session_processes(ray_tmpdir)

    # SIGTERM once round 1 is committed: the round in progress is abandoned, the run is KILLED, and the
    # message names the command that continues it.
    first = start("pretrain", "run.yaml")
    wait_for(lambda: committed_round(runs) >= 1, 600, "round 1")
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    line = only_line(stderr, lambda line: line.startswith("interrupted after round"), "the interruption")
    found = re.fullmatch(r"interrupted after round (\d): continue with (crossfed pretrain run\.yaml --resume (\w+))",
                         line)
    assert found, line
    assert int(found[1]) == committed_round(runs) >= 1 and "Traceback" not in stderr
    run_id = found[3]
    assert store.get_run(run_id).info.status == "KILLED"
    wait_for(no_ray_process_left, 30, f"the Ray session's processes to end: {ray_session_processes(ray_tmpdir)}")

    # Resumed, then SIGKILL mid-round: nothing can run on the way out; the run stays RUNNING in MLflow and
    # the watchdog takes the embedded Ray's leftovers down.
    second = start(*found[2].split()[1:])
    wait_for(lambda: committed_round(runs) >= int(found[1]) + 1, 600, "a round after the resume")
    os.kill(second.pid, signal.SIGKILL)
    second.wait(timeout=60)
    assert store.get_run(run_id).info.status == "RUNNING"
    wait_for(no_ray_process_left, 30, f"the Ray session's processes to end: {ray_session_processes(ray_tmpdir)}")

    # The run left RUNNING by a process that is gone is taken over, and finishes; every round is logged once.
    third = start(*found[2].split()[1:])
    stdout, stderr = third.communicate(timeout=600)
    assert third.returncode == 0, stderr
    run = store.get_run(run_id)
    assert run.info.status == "FINISHED" and committed_round(runs) == 4
    for metric in ("global/val_loss", "clients/sampled"):
        assert [m.step for m in store.get_metric_history(run_id, metric)] == [1, 2, 3, 4], metric
    wait_for(no_ray_process_left, 30, f"the Ray session's processes to end: {ray_session_processes(ray_tmpdir)}")

    # It ends by naming each experiment's model for `crossfed finetune -c`: the run id, the registered
    # version (named after the config), the run's model folder and the files at this site.
    for name in ("cms", "atlas"):
        command = only_line(stdout, lambda line, name=name: f"finetune run.yaml -e {name} -c" in line,
                            f"{name}'s command")
        assert command.endswith(f" -c {run_id}"), command
        assert str(runs / run_id / "clients" / name / "final_model") in stdout
    assert f"-c runs:/{run_id}/model" in stdout and "-c models:/crossfed/1" in stdout
    # ...and each client's footprint: its device-hours, and energy only where a hardware counter measured it
    from crossfed.federation.footprint import RankMeter

    measured = {"gpu_energy_j", "cpu_energy_j"} & set(RankMeter(1.0, 0.0, []).start().stop())
    for name in ("cms", "atlas"):
        line = only_line(stdout, lambda line, name=name: line.startswith(f"{name}: ") and "device-hours" in line,
                         f"{name}'s footprint")
        assert float(line.split()[1]) > 0, line
        assert line.endswith("energy not measured") == (not measured), line

    # ...and fine-tuning from the run id, from the registered version and from scratch each logs a run that
    # names its source model
    for source, extra in ((run_id, ["-c", run_id]), ("models:/crossfed/1", ["-c", "models:/crossfed/1"]),
                          ("none", [])):
        done = subprocess.run([sys.executable, "-m", "crossfed", "finetune", "run.yaml", "-e", "atlas", *extra,
                               "--set", "seed=5"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        found_runs = store.search_runs([run.info.experiment_id], f"tags.`crossfed.source_model` = '{source}'")
        assert len(found_runs) == 1, (source, [r.info.run_id for r in found_runs], done.stdout, done.stderr)
        (finetuned,) = found_runs
        assert finetuned.info.run_id in done.stdout and finetuned.info.status == "FINISHED"
        tags, params = finetuned.data.tags, finetuned.data.params
        assert tags["crossfed.mode"] == "finetune" and tags["crossfed.experiment"] == "atlas"
        assert tags.get("crossfed.source_run") == (None if source == "none" else run_id)
        assert params["source_model"] == source and params["labelled_events"] == "40" and params["seed"] == "5"
        assert params["finetune.epochs"] == "2" and params["finetune.lr"] and params["finetune.mode"] == "lower_lr"
        assert ("from scratch" if source == "none" else f"from {source}") in tags["mlflow.note.content"]
        assert tags["mlflow.source.name"].startswith("crossfed finetune run.yaml -e atlas")
        assert [m.step for m in store.get_metric_history(finetuned.info.run_id, "train_loss")] == [1, 2]
        assert 0.0 <= finetuned.data.metrics["auc"] <= 1.0 and "rejection_at_eps_s_0.3" in finetuned.data.metrics
        roc = json.loads((Path(store.download_artifacts(finetuned.info.run_id, "roc.json"))).read_text())
        assert len(roc["fpr"]) == len(roc["tpr"]) > 2
        # the run was opened before training, not after: it lasted as long as the training took
        assert finetuned.info.end_time - finetuned.info.start_time > 100  # ms
        if source != "none":
            assert params["source_file"] == str(runs / run_id / "clients" / "atlas" / "final_model")


def test_resume_tells_a_running_owner_from_one_that_is_gone():
    """The check behind taking over a RUNNING run: alive is this host's pid with the same start time."""
    from crossfed.federation.rounds import process_alive, this_process

    me = this_process()
    assert process_alive(me, "no-such-run")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert not process_alive({**me, "pid": gone.pid}, "no-such-run")
    assert not process_alive({**me, "started": me["started"] - 100}, "no-such-run")  # the pid was reused
