"""The rendered MLflow pod, run on this machine: its init containers, then its server, as the kubelet would.

Commands and environment come from `helm template` (secretKeyRefs resolved from the rendered Secrets, `$(VAR)`
expanded as the kubelet does). Only what the cluster provides is swapped for a local stand-in: the database
(PostgreSQL -> SQLite), the S3 store (MinIO -> moto's S3 server), the mounted ConfigMap's and /tmp's folders,
and the listening address.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .conftest import TWO, by_kind, free_port, render

GIVEN = {"mlflow.auth.adminPassword": "Adm1n-pass-81c2", "mlflow.auth.flaskSecretKey": "fsk-0d1e9a77",
         "mlflow.auth.jobUser.password": "J0b-pass-55a1", "postgresql.auth.password": "p@ss:w/rd%",
         "minio.auth.rootUser": "minio-user", "minio.auth.rootPassword": "mn-5e1b7f00"}


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion in env values and commands."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)


class LocalPod:
    """Runs the containers of one rendered pod spec as local processes."""

    def __init__(self, spec: dict, secrets: dict[str, dict[str, str]], config_maps: dict[str, dict[str, str]],
                 stand_ins: dict[str, str], root: Path):
        self.spec, self.secrets, self.stand_ins, self.root = spec, secrets, stand_ins, root
        self.workdir = root / "workdir"  # the image's WORKDIR: read-only in the pod, so it must stay empty
        self.workdir.mkdir()
        self.mounts = {}  # mountPath -> local folder
        for volume in spec["volumes"]:
            folder = root / "volumes" / volume["name"]
            folder.mkdir(parents=True)
            for key, text in config_maps.get(volume.get("configMap", {}).get("name"), {}).items():
                (folder / key).write_text(self.local(text))
            for container in spec["containers"] + spec["initContainers"]:
                for mount in container["volumeMounts"]:
                    if mount["name"] == volume["name"]:
                        self.mounts[mount["mountPath"]] = str(folder)

    def local(self, text: str) -> str:
        for in_cluster, here in self.stand_ins.items():
            text = text.replace(in_cluster, here)
        mount_paths = "|".join(re.escape(path) for path in sorted(self.mounts, key=len, reverse=True))
        return re.sub(rf"(?<![\w/])({mount_paths})(?=/|$|\W)", lambda m: self.mounts[m.group(1)], text)

    def env(self, container: dict) -> dict[str, str]:
        # This interpreter's bin first: its `mlflow` is no shim that looks for $HOME/.pyenv.
        env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        for variable in container.get("env", []):
            if "valueFrom" in variable:
                ref = variable["valueFrom"]["secretKeyRef"]
                value = self.secrets[ref["name"]][ref["key"]]
            else:
                value = self.local(expand(variable["value"], env))
            env[variable["name"]] = value
        return env

    def command(self, container: dict, env: dict[str, str]) -> list[str]:
        return [self.local(expand(word, env)) for word in container["command"]]

    def init(self) -> list[subprocess.CompletedProcess]:
        done = []
        for container in self.spec["initContainers"]:
            env = self.env(container)
            done.append(subprocess.run(self.command(container, env), env=env, cwd=self.workdir, capture_output=True,
                                       text=True, timeout=300))
            assert done[-1].returncode == 0, f"init container {container['name']}:\n{done[-1].stderr[-3000:]}"
        return done

    def start(self, log: Path) -> subprocess.Popen:
        (container,) = self.spec["containers"]
        env = self.env(container)
        return subprocess.Popen(self.command(container, env), env=env, cwd=self.workdir, stdout=open(log, "w"),
                                stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 endpoint on 127.0.0.1: moto's server, in this process."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    yield f"http://127.0.0.1:{server._port}"
    server.stop()


@pytest.fixture(scope="module")
def mlflow_pod(helm, s3_endpoint, tmp_path_factory):
    """(url, pod, init results, rendered objects) of the chart's MLflow pod, running locally on SQLite."""
    args = ["-f", TWO, "--set", "mlflow.auth.existingSecret=", "--set", "mlflow.auth.jobUser.existingSecret=",
            "--set", "postgresql.auth.existingSecret=", "--set", "minio.auth.existingSecret="]
    for key, value in GIVEN.items():
        args += ["--set-string", f"{key}={value}"]
    objects = render(helm, *args)
    secrets = {s["metadata"]["name"]: s["stringData"] for s in by_kind(objects, "Secret")}
    config_maps = {c["metadata"]["name"]: c["data"] for c in by_kind(objects, "ConfigMap")}
    (deployment,) = [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"] == "demo-crossfed-mlflow"]
    root = tmp_path_factory.mktemp("mlflow-pod")
    port = free_port()
    stand_ins = {
        "postgresql://mlflow@demo-crossfed-postgresql:5432/mlflow": f"sqlite:///{root / 'mlflow.db'}",
        "http://demo-crossfed-minio:9000": s3_endpoint,
        "--host=0.0.0.0": "--host=127.0.0.1",
        "--port=5000": f"--port={port}",
    }
    pod = LocalPod(deployment["spec"]["template"]["spec"], secrets, config_maps, stand_ins, root)
    first = pod.init()
    again = pod.init()  # a restart: an existing database and an existing job user
    server = pod.start(root / "server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                pytest.fail(f"mlflow server exited with {server.returncode}:\n{(root / 'server.log').read_text()[-4000:]}")
            try:
                if requests.get(f"{url}/health", timeout=10).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or still starting its workers
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer /health:\n{(root / 'server.log').read_text()[-4000:]}")
            time.sleep(1)
        yield url, pod, (first, again), objects, server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


JOB_USER = ("crossfed", GIVEN["mlflow.auth.jobUser.password"])
ADMIN = ("admin", GIVEN["mlflow.auth.adminPassword"])
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def test_rendered_mlflow_server_starts_with_authentication(mlflow_pod):
    url = mlflow_pod[0]
    assert requests.get(f"{url}/health", timeout=60).status_code == 200
    assert requests.get(f"{url}{SEARCH}", timeout=60).status_code == 401
    assert requests.get(f"{url}{SEARCH}", auth=("crossfed", "wrong-password"), timeout=60).status_code == 401
    assert requests.get(f"{url}{SEARCH}", auth=JOB_USER, timeout=60).status_code == 200
    assert requests.get(f"{url}{SEARCH}", auth=ADMIN, timeout=60).status_code == 200


def test_init_containers_create_the_bucket_migrate_and_make_the_job_user(mlflow_pod, s3_endpoint):
    import boto3

    first, again = mlflow_pod[2]
    assert [c["name"] for c in mlflow_pod[1].spec["initContainers"]] == ["create-bucket", "db-upgrade", "job-user"]
    assert "created bucket mlflow" in first[0].stdout and "created" not in again[0].stdout
    assert "MLflow job user 'crossfed': created" in first[2].stdout
    assert "MLflow job user 'crossfed': password set from its Secret" in again[2].stdout
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                      region_name="us-east-1")
    assert "mlflow" in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_the_job_user_logs_runs_and_artifacts_but_is_no_admin(mlflow_pod, s3_endpoint, tmp_path):
    """What a Ray pod does with MLFLOW_TRACKING_USERNAME/PASSWORD: log through the server into S3."""
    import boto3

    url = mlflow_pod[0]
    (tmp_path / "note.txt").write_text("from a Ray pod")
    script = (
        "import mlflow\n"
        "mlflow.set_experiment('chart-test')\n"
        "with mlflow.start_run():\n"
        "    mlflow.log_metric('auc', 0.75)\n"
        f"    mlflow.log_artifact({str(tmp_path / 'note.txt')!r})\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": JOB_USER[0],
           "MLFLOW_TRACKING_PASSWORD": JOB_USER[1]}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                      region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow", Prefix="mlflow/").get("Contents", [])]
    assert any(key.endswith("/artifacts/note.txt") for key in keys), keys
    create_user = f"{url}/api/2.0/mlflow/users/create"
    assert requests.post(create_user, json={"username": "eve", "password": "Eve-pass-1234"}, auth=JOB_USER,
                         timeout=60).status_code == 403
    assert requests.post(create_user, json={"username": "eve", "password": "Eve-pass-1234"}, auth=ADMIN,
                         timeout=60).status_code == 200


def test_no_credential_on_a_command_line_or_in_a_file(mlflow_pod):
    """The database password reaches libpq as PGPASSWORD only: not in a URL, an argument or the auth ini."""
    url, pod, _, objects, server = mlflow_pod
    secrets = set(GIVEN.values())
    for container in pod.spec["initContainers"] + pod.spec["containers"]:
        words = " ".join(pod.command(container, pod.env(container)))
        assert not any(secret in words for secret in secrets), container["name"]
    running = [server.pid] + [int(p) for p in subprocess.run(["pgrep", "-s", str(server.pid)], capture_output=True,
                                                              text=True).stdout.split()]
    for pid in running:
        try:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            continue
        assert not any(secret in command_line for secret in secrets)
    for folder in (pod.root / "volumes").iterdir():
        for path in folder.rglob("*"):
            if path.is_file():
                assert not any(secret in path.read_text(errors="replace") for secret in secrets), path
    assert list(pod.workdir.iterdir()) == []  # nothing written where the pod's filesystem is read-only
    server_env = pod.env(pod.spec["containers"][0])
    assert server_env["PGPASSWORD"] == GIVEN["postgresql.auth.password"]
    (deployment,) = [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"] == "demo-crossfed-mlflow"]
    rendered_uri = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert rendered_uri["MLFLOW_BACKEND_STORE_URI"]["value"] == "postgresql://mlflow@demo-crossfed-postgresql:5432/mlflow"
