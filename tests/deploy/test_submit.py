"""`crossfed submit` / `crossfed jobs` against a real local Ray head with token authentication.

The head is started with `ray start --head --block` as our own subprocess (own temp dir and ports) and
stopped by terminating that process group, never with `ray stop`, which would kill other Ray clusters
on the machine.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import REPO_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """(address, env) of a local Ray head with token auth; env holds the token for the clients."""
    token = secrets.token_hex(16)
    temp_dir = Path("/tmp") / f"cfray-{secrets.token_hex(3)}"  # short: Ray's socket paths have a length limit
    dashboard_port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "DS_ACCELERATOR": "cpu",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    log = open(tmp_path_factory.mktemp("ray") / "head.log", "w")
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={free_port()}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard_port}", "--num-cpus=2", f"--temp-dir={temp_dir}", "--include-dashboard=true",
         f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        _wait_for_job_api(address, head, log.name)
        yield address, {**env, "RAY_AUTH_TOKEN": token}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_job_api(address: str, head: subprocess.Popen, log: str) -> None:
    import requests

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray head exited with {head.returncode}:\n{Path(log).read_text()[-3000:]}")
        try:
            if requests.get(f"{address}/api/version", timeout=2).status_code in (200, 401, 403):
                return
        except requests.ConnectionError:
            pass
        time.sleep(1)
    pytest.fail(f"Ray job API at {address} did not come up:\n{Path(log).read_text()[-3000:]}")


def crossfed(*args: str, env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crossfed", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def project_copy(tmp_path: Path) -> Path:
    """A minimal project directory to ship: the job entrypoints (the real ones) and a config folder."""
    shutil.copytree(REPO_ROOT / "jobs", tmp_path / "project" / "jobs", ignore=shutil.ignore_patterns("configs"))
    return tmp_path / "project"


def tiny_pretrain_config(project: Path, samples, tracking_db: Path) -> Path:
    config = {
        "name": "submit-test",
        "output_dir": str(project.parent / "runs"),
        "data": {"cache_dir": str(project.parent / "cache"), "max_objects": 8},
        "experiments": {
            det: {"schema": schema, "pretrain": {"files": [str(samples[det]["ttbar"])], "max_events": 200}}
            for det, schema in (("cms", "cms_nanoaod"), ("atlas", "atlas_opendata"))
        },
        "model": {"preset": "tiny"},
        "training": {"batch_size": 32, "steps": 2, "eval_batches": 1, "device": "cpu"},
        "federation": {"rounds": 1, "local_steps": 2, "min_clients": 2},
        "tracking": {"uri": f"sqlite:///{tracking_db}", "experiment": "submit-test"},
    }
    path = project / "configs" / "tiny.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def test_submit_pretrain_follow_succeeds_and_logs_to_mlflow(ray_head, samples, tmp_path):
    address, env = ray_head
    project = project_copy(tmp_path)
    tracking_db = tmp_path / "mlflow.db"
    tiny_pretrain_config(project, samples, tracking_db)

    done = crossfed("submit", "configs/tiny.yaml", "--address", address, "--mode", "federated", "--follow",
                    env=env, cwd=project, timeout=420)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    job_id = done.stdout.split("submitted job ", 1)[1].split()[0]
    assert "SUCCEEDED" in done.stderr

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tracking_db}")
    experiment = client.get_experiment_by_name("submit-test")
    assert experiment is not None, "the job wrote no MLflow experiment"
    runs = client.search_runs([experiment.experiment_id])
    assert runs and any(run.info.status == "FINISHED" for run in runs)

    listed = crossfed("jobs", "list", "--address", address, env=env, cwd=project, timeout=60)
    assert listed.returncode == 0 and job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    logs = crossfed("jobs", "logs", job_id, "--address", address, env=env, cwd=project, timeout=60)
    assert logs.returncode == 0 and logs.stdout.strip()


def test_failing_job_makes_follow_exit_nonzero_and_can_be_listed(ray_head, samples, tmp_path):
    address, env = ray_head
    project = project_copy(tmp_path)
    config = tiny_pretrain_config(project, samples, tmp_path / "mlflow.db")
    raw = yaml.safe_load(config.read_text())
    raw["experiments"]["cms"]["pretrain"]["files"] = [str(tmp_path / "missing.root")]  # only the cluster reads data
    config.write_text(yaml.safe_dump(raw))

    done = crossfed("submit", "configs/tiny.yaml", "--address", address, "--follow", env=env, cwd=project)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "FAILED" in done.stderr


def test_stop_a_running_job(ray_head, tmp_path):
    address, env = ray_head
    project = project_copy(tmp_path)
    (project / "jobs" / "sweep.py").write_text("import time\ntime.sleep(600)\n")  # a long job to stop
    (project / "sweep.yaml").write_text("{}\n")
    submitted = crossfed("submit", "sweep.yaml", "--command", "sweep", "--address", address, env=env, cwd=project)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split("submitted job ", 1)[1].split()[0]
    stopped = crossfed("jobs", "stop", job_id, "--address", address, env=env, cwd=project, timeout=60)
    assert stopped.returncode == 0 and "stop requested" in stopped.stdout
    followed = crossfed("jobs", "logs", job_id, "--follow", "--address", address, env=env, cwd=project, timeout=120)
    assert followed.returncode == 1 and "STOPPED" in followed.stderr


def test_wrong_token_and_unreachable_address_are_one_line_errors(ray_head, tmp_path):
    address, env = ray_head
    refused = crossfed("jobs", "list", "--address", address, env={**env, "RAY_AUTH_TOKEN": "wrong"}, cwd=tmp_path)
    assert refused.returncode == 2 and "refused the auth token" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    unreachable = crossfed("jobs", "list", "--address", f"http://127.0.0.1:{free_port()}", env=env, cwd=tmp_path)
    assert unreachable.returncode == 2 and "cannot reach the Ray job API" in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1
    no_address = crossfed("jobs", "list", env={k: v for k, v in env.items() if k != "RAY_ADDRESS"}, cwd=tmp_path)
    assert no_address.returncode == 2 and "RAY_ADDRESS" in no_address.stderr
