"""Submit crossfed runs to a remote Ray cluster (e.g. KubeRay) through the Ray job API.

The working directory is shipped as the job's `runtime_env["working_dir"]` (without data, runs and
other big or generated folders: events never travel, only code and configs do), and the job runs
`python jobs/<command>.py <config> [args]` there, the same entrypoint a KubeRay RayJob uses.

Ray token authentication: the token is read like Ray itself does (RAY_AUTH_TOKEN, then the file named
by RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token) and sent as a bearer token with every request.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

from crossfed.errors import CrossfedError

COMMANDS = ("pretrain", "finetune", "sweep", "study")
MODES = ("federated", "local", "centralized")

# Never uploaded with the working directory: VCS data, caches, outputs, event files, local binaries.
WORKING_DIR_EXCLUDES = [
    ".git/", "__pycache__/", "*.pyc", ".pytest_cache/", "*.egg-info/", "build/", "dist/",
    ".crossfed/", "runs/", "mlruns/", "mlartifacts/", "mlflow.db", "data/", "*.root",
    "helm/helm", ".whl/", ".gl/", ".venv/", "venv/",
]

DEFAULT_TOKEN_FILE = Path.home() / ".ray" / "auth_token"
CONNECT_TIMEOUT_S = 5.0


def resolve_address(address: str | None) -> str:
    """The job API address: the option, else RAY_ADDRESS; `host:port` gets `http://`."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise CrossfedError("no Ray address: pass --address http://HEAD:8265 or set RAY_ADDRESS")
    if "://" not in address:
        address = f"http://{address}"
    scheme = urlparse(address).scheme
    if scheme not in ("http", "https"):
        raise CrossfedError(
            f"Ray address {address}: the job API needs the dashboard's http(s) address "
            f"(e.g. http://HEAD:8265), not a {scheme}:// address"
        )
    return address.rstrip("/")


def read_auth_token() -> str | None:
    """The Ray auth token, looked up in the order Ray uses; None when there is none."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path_from_env = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(path_from_env) if path_from_env else DEFAULT_TOKEN_FILE
    if path.is_file():
        token = path.read_text().strip()
        if token:
            return token
    if path_from_env:
        raise CrossfedError(f"RAY_AUTH_TOKEN_PATH={path_from_env}: no token in that file")
    return None


def job_client(address: str | None):
    """A JobSubmissionClient for the cluster at `address`, authenticated when a token is available."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    address = resolve_address(address)
    _check_reachable(address)
    token = read_auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except AuthenticationError:
        raise CrossfedError(
            f"the Ray cluster at {address} refused the request: set RAY_AUTH_TOKEN to the cluster's token"
            if not token
            else f"the Ray cluster at {address} refused the auth token (RAY_AUTH_TOKEN or ~/.ray/auth_token)"
        ) from None
    except ConnectionError as err:
        raise CrossfedError(f"cannot reach the Ray job API at {address}: {err}") from None


def _check_reachable(address: str) -> None:
    # JobSubmissionClient has no connect timeout: a black-holed address would hang forever.
    url = urlparse(address)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise CrossfedError(f"cannot reach the Ray job API at {address}: {err.strerror or err}") from None


def build_entrypoint(command: str, config: str, mode: str | None = None, extra_args: Sequence[str] = ()) -> str:
    """`python jobs/<command>.py <config> [--mode M] [args]`, paths relative to the working directory."""
    if command not in COMMANDS:
        raise CrossfedError(f"--command {command}: expected one of {', '.join(COMMANDS)}")
    args = [config]
    if mode is not None:
        if command != "pretrain":
            raise CrossfedError(f"--mode applies to pretrain only, not {command}")
        if mode not in MODES:
            raise CrossfedError(f"--mode {mode}: expected one of {', '.join(MODES)}")
        args += ["--mode", mode]
    return shlex.join(["python", f"jobs/{command}.py", *args, *extra_args])


def _config_inside(config: Path, working_dir: Path) -> str:
    config, working_dir = config.resolve(), working_dir.resolve()
    if not config.is_file():
        raise CrossfedError(f"{config}: no such config file")
    if not config.is_relative_to(working_dir):
        raise CrossfedError(
            f"{config} is outside the working directory {working_dir}, so it would not be shipped with the "
            "job: move it inside or pass --working-dir"
        )
    return config.relative_to(working_dir).as_posix()


def submit(
    config: str | Path,
    *,
    address: str | None = None,
    command: str = "pretrain",
    mode: str | None = None,
    working_dir: str | Path = ".",
    extra_args: Sequence[str] = (),
    submission_id: str | None = None,
    validate: bool = True,
) -> str:
    """Submit one crossfed run; returns the Ray job's submission id."""
    working_dir = Path(working_dir)
    config_path = _config_inside(Path(config), working_dir)
    if not (working_dir / "jobs" / f"{command}.py").is_file():
        raise CrossfedError(f"{working_dir.resolve()}: has no jobs/{command}.py: submit from the crossfed project root")
    if validate and command == "study":
        from crossfed.study.config import load_study

        load_study(working_dir / config_path)  # fail here, not minutes later on the cluster
    elif validate and command != "sweep":  # sweep files are tuning specs, not run configs
        from crossfed.config import load_config

        load_config(working_dir / config_path)
    entrypoint = build_entrypoint(command, config_path, mode, extra_args)
    client = job_client(address)
    runtime_env = {"working_dir": str(working_dir.resolve()), "excludes": WORKING_DIR_EXCLUDES}
    return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id,
                             metadata={"crossfed.command": command, "crossfed.config": config_path})


def follow(address: str | None, job_id: str, write: Callable[[str], None]) -> str:
    """Stream a job's logs until it ends; returns its final status (SUCCEEDED, FAILED, STOPPED)."""
    client = job_client(address)
    _known_job(client, job_id)

    async def stream() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(stream())
    return str(client.get_job_status(job_id).value)


def list_jobs(address: str | None) -> list:
    """All jobs on the cluster, newest first (`ray.job_submission.JobDetails`)."""
    jobs = job_client(address).list_jobs()
    return sorted(jobs, key=lambda job: job.start_time or 0, reverse=True)


def job_logs(address: str | None, job_id: str) -> str:
    client = job_client(address)
    _known_job(client, job_id)
    return client.get_job_logs(job_id)


def stop_job(address: str | None, job_id: str) -> bool:
    """Ask the cluster to stop a job; False when it had already ended."""
    client = job_client(address)
    _known_job(client, job_id)
    return client.stop_job(job_id)


def _known_job(client, job_id: str) -> None:
    try:
        client.get_job_info(job_id)
    except RuntimeError as err:
        if "404" in str(err) or "does not exist" in str(err):
            raise CrossfedError(f"no job {job_id!r} on this cluster (see `crossfed jobs list`)") from None
        raise
