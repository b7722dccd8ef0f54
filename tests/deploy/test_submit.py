"""`crossfed submit` / `crossfed jobs` against a real local Ray head with token authentication.

The head is started with `ray start --head --block` as our own subprocess (own temp dir and ports) and
stopped by terminating that process group, never with `ray stop`, which would kill other Ray clusters
on the machine. It carries the node label crossfed.io/experiment=cms, as a KubeRay worker of the chart's
`cms` group would. The clients get RAY_AUTH_TOKEN and nothing else of Ray's, as docs/kubernetes.md says.
"""

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from crossfed.submit import WORKING_DIR_EXCLUDES

from .conftest import REPO_ROOT, TWO, by_kind, free_port, render


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """(address, client env) of a local Ray head with token auth; the client env holds only the token."""
    token = secrets.token_hex(16)
    temp_dir = Path("/tmp") / f"cfray-{secrets.token_hex(3)}"  # short: Ray's socket paths have a length limit
    dashboard_port = free_port()
    outside_ray = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    head_env = {**outside_ray, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "DS_ACCELERATOR": "cpu",
                "RAY_USAGE_STATS_ENABLED": "0"}
    log = open(tmp_path_factory.mktemp("ray") / "head.log", "w")
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={free_port()}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard_port}", "--num-cpus=2", f"--temp-dir={temp_dir}", "--include-dashboard=true",
         f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
         "--labels=crossfed.io/experiment=cms"],
        env=head_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        _wait_for_job_api(address, head, log.name)
        yield address, {**outside_ray, "RAY_AUTH_TOKEN": token, "DS_ACCELERATOR": "cpu"}
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

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray head exited with {head.returncode}:\n{Path(log).read_text()[-3000:]}")
        try:
            if requests.get(f"{address}/api/version", timeout=5).status_code in (200, 401, 403):
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    pytest.fail(f"Ray job API at {address} did not come up:\n{Path(log).read_text()[-3000:]}")


def crossfed(*args: str, env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crossfed", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def project_copy(tmp_path: Path) -> Path:
    """A working tree to submit from: the crossfed package under platform/ and a configs folder."""
    project = tmp_path / "project"
    shutil.copytree(REPO_ROOT / "platform" / "crossfed", project / "platform" / "crossfed",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (project / "configs").mkdir()
    return project


def tiny_pretrain_config(samples, tracking_db: Path, outputs: Path, experiments=("cms", "atlas")) -> dict:
    schemas = {"cms": "cms_nanoaod", "atlas": "atlas_opendata"}
    return {
        "name": "submit-test",
        "output_dir": str(outputs / "runs"),
        "data": {"cache_dir": str(outputs / "cache"), "max_objects": 8},
        "experiments": {
            det: {"schema": schemas[det], "pretrain": {"files": [str(samples[det]["ttbar"])], "max_events": 200}}
            for det in experiments
        },
        "model": {"preset": "tiny"},
        "training": {"batch_size": 32, "steps": 2, "eval_batches": 1, "device": "cpu"},
        "federation": {"rounds": 1, "local_steps": 2, "min_clients": len(experiments)},
        "tracking": {"uri": f"sqlite:///{tracking_db}", "experiment": "submit-test"},
    }


def finished_runs(tracking_db: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tracking_db}")
    experiment = client.get_experiment_by_name("submit-test")
    assert experiment is not None, "the job wrote no MLflow experiment"
    return [run for run in client.search_runs([experiment.experiment_id]) if run.info.status == "FINISHED"]


def test_submit_runs_the_working_tree_code_and_logs_to_mlflow(ray_head, samples, tmp_path):
    address, env = ray_head
    project = project_copy(tmp_path)
    tracking_db = tmp_path / "mlflow.db"
    config = tiny_pretrain_config(samples, tracking_db, tmp_path)
    (project / "configs" / "tiny.yaml").write_text(yaml.safe_dump(config))
    # A change in the working tree: a new log line in every process that imports crossfed, and a new version.
    marker = f"working-tree-{secrets.token_hex(4)}"
    init = project / "platform" / "crossfed" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.1.0"', '__version__ = "0.1.0+tree"')
                    + f"\nimport os as _os\nprint('{marker}', _os.getpid(), flush=True)\n")

    done = crossfed("submit", "configs/tiny.yaml", "--address", address, "--mode", "federated", "--follow",
                    env=env, cwd=project, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    job_id = done.stdout.split("submitted job ", 1)[1].split()[0]
    assert "SUCCEEDED" in done.stderr
    # The driver and the federation's actors (other processes) all ran the submitted code.
    processes = set(re.findall(rf"{marker} (\d+)", done.stdout))
    assert len(processes) >= 3, done.stdout[-3000:]  # the driver and at least the two clients
    assert "the cluster's image has crossfed 0.1.0, the job ships crossfed 0.1.0+tree" in " ".join(done.stderr.split())
    assert finished_runs(tracking_db)

    listed = crossfed("jobs", "list", "--address", address, env=env, cwd=project, timeout=60)
    assert listed.returncode == 0 and job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    assert "version-probe" not in listed.stdout and "importlib.metadata" not in listed.stdout  # probes are deleted
    logs = crossfed("jobs", "logs", job_id, "--address", address, env=env, cwd=project, timeout=60)
    assert logs.returncode == 0 and marker in logs.stdout


def test_the_rayjob_entrypoint_runs_its_config_as_the_submitter_submits_it(helm, ray_head, samples, tmp_path):
    """The chart's RayJob, as KubeRay's submitter pod runs it: `ray job submit` with the ConfigMap's folder."""
    address, env = ray_head
    tracking_db = tmp_path / "mlflow.db"
    config = tiny_pretrain_config(samples, tracking_db, tmp_path, experiments=("cms",))
    config["experiments"]["cms"]["cluster"] = {"node_group": "cms"}  # the head's label, as a cms worker's
    objects = render(helm, "-f", TWO, "--set-json", f"rayJob.config={json.dumps(config)}")
    (job,) = by_kind(objects, "RayJob")
    (config_map,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"] == job["metadata"]["name"]]
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    mounted = tmp_path / "submitter" / runtime_env["working_dir"].lstrip("/")  # the subPath mount's folder
    mounted.mkdir(parents=True)
    (mounted / "run.yaml").write_text(config_map["data"]["run.yaml"])
    runtime_env["working_dir"] = str(mounted)
    submitter_env = {**env, "RAY_AUTH_MODE": "token"}  # the submitter pod's environment
    # KubeRay's submitter runs one shell line: `ray job submit ... -- <entrypoint>`, the entrypoint unquoted.
    submit_line = shlex.join(["ray", "job", "submit", "--address", address, "--runtime-env-json", json.dumps(runtime_env),
                              "--metadata-json", json.dumps(job["spec"]["metadata"])])
    done = subprocess.run(["bash", "-c", f"{submit_line} -- {job['spec']['entrypoint']}"], env=submitter_env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "succeeded" in done.stdout.lower()
    assert finished_runs(tracking_db)


def test_failing_job_makes_follow_exit_nonzero_and_can_be_listed(ray_head, samples, tmp_path):
    address, env = ray_head
    project = project_copy(tmp_path)
    config = tiny_pretrain_config(samples, tmp_path / "mlflow.db", tmp_path)
    config["experiments"]["cms"]["pretrain"]["files"] = [str(tmp_path / "missing.root")]  # only the cluster reads data
    (project / "configs" / "tiny.yaml").write_text(yaml.safe_dump(config))

    done = crossfed("submit", "configs/tiny.yaml", "--address", address, "--follow", "--no-version-check",
                    env=env, cwd=project)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "FAILED" in done.stderr and "warning" not in done.stderr


def test_stop_a_running_job(ray_head, tmp_path):
    address, env = ray_head
    project = project_copy(tmp_path)
    # The shipped package is what runs: a long job to stop.
    (project / "platform" / "crossfed" / "__main__.py").write_text("import time\ntime.sleep(600)\n")
    (project / "sweep.yaml").write_text("{}\n")
    submitted = crossfed("submit", "sweep.yaml", "--command", "sweep", "--address", address, "--no-version-check",
                         env=env, cwd=project)
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
    no_address = crossfed("jobs", "list", env=env, cwd=tmp_path)
    assert no_address.returncode == 2 and "RAY_ADDRESS" in no_address.stderr


def test_the_package_travels_whole_and_the_tree_without_what_the_excludes_are_for(tmp_path):
    """Ray applies the excludes to the package too, relative to its root: every file of crossfed must pass."""
    from ray._private.runtime_env.packaging import _get_excludes

    package = REPO_ROOT / "platform" / "crossfed"
    excluded = _get_excludes(package, WORKING_DIR_EXCLUDES)
    files = [p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert len(files) > 50 and [p for p in files if excluded(p)] == []
    tree = _get_excludes(REPO_ROOT, WORKING_DIR_EXCLUDES)
    for path in ("platform/crossfed/__init__.py", "runs/x/model.pt", ".git/HEAD", "mlruns/0/meta.yaml",
                 "data/demo/cms_ttbar.root", "cache/events.npz", "helm/helm"):
        assert tree(REPO_ROOT / path), path
    for path in ("jobs/configs/demo.yaml", "tuning/lr.yaml", "helm/crossfed/values.yaml"):
        assert not tree(REPO_ROOT / path), path


def test_the_package_shipped_is_the_tree_s_else_the_client_s(tmp_path):
    import crossfed
    from crossfed.submit import package_to_ship, package_version, version_mismatch

    tree = project_copy(tmp_path)
    assert package_to_ship(tree) == (tree / "platform" / "crossfed").resolve()
    assert package_to_ship(tmp_path / "elsewhere") == Path(crossfed.__file__).resolve().parent
    assert package_version(package_to_ship(tree)) == crossfed.__version__
    assert version_mismatch("0.1.0", "0.1.0") is None
    assert "has crossfed 0.0.9, the job ships crossfed 0.1.0" in version_mismatch("0.1.0", "0.0.9")
    assert "the cluster has no crossfed installed" in version_mismatch("0.1.0", None)
