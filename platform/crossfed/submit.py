"""Submit crossfed runs to a remote Ray cluster (e.g. KubeRay) through the Ray job API.

The working directory is shipped as the job's `runtime_env["working_dir"]` (without data, runs and
other big or generated folders: events never travel, only code and configs do), and the crossfed package
as `runtime_env["py_modules"]`: the working tree's `platform/crossfed` when there is one, else the
client's own copy, so the job runs the code you submitted, not the image's. The job runs
`python -m crossfed <command> <config> [args]`, the entrypoint the chart's RayJob uses too. Before
submitting, a probe job reads the crossfed version installed on the cluster and a mismatch is warned
about (the image provides the dependencies the shipped code runs with).

Ray token authentication: the token is read like Ray itself does (RAY_AUTH_TOKEN, then the file named
by RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token) and sent as a bearer token with every request.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

from crossfed.errors import CrossfedError
from crossfed.federation import MODES

COMMANDS = ("pretrain", "finetune", "sweep", "study")

# Never uploaded with the working directory or the package: VCS data, caches, outputs, event and array
# files, local binaries, and platform/ (it travels as py_modules). Ray applies these gitignore-style
# patterns to the package too, relative to its own root, so no pattern may name a folder the package has:
# "/data/" would drop crossfed/data/. Events are kept out by their suffixes instead; a project's
# .gitignore (crossfed's ignores /data/) applies to the working directory as well.
WORKING_DIR_EXCLUDES = [
    ".git/", "__pycache__/", "*.pyc", ".pytest_cache/", "*.egg-info/",
    "*.root", "*.parquet", "*.h5", "*.hdf5", "*.npy", "*.npz", "*.pt",
    "/build/", "/dist/", "/.crossfed/", "/runs/", "/mlruns/", "/mlartifacts/", "/mlflow.db",
    "/helm/helm", "/.whl/", "/.gl/", "/.venv/", "/venv/", "/platform/",
]
VERSION_PROBE_TIMEOUT_S = 120.0

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
    """`python -m crossfed <command> <config> [--mode M] [args]`, the config relative to the working directory.

    helm/crossfed/templates/rayjob.yaml builds the RayJob's entrypoint the same way.
    """
    if command not in COMMANDS:
        raise CrossfedError(f"--command {command}: expected one of {', '.join(COMMANDS)}")
    args = [config]
    if mode is not None:
        if command != "pretrain":
            raise CrossfedError(f"--mode applies to pretrain only, not {command}")
        if mode not in MODES:
            raise CrossfedError(f"--mode {mode}: expected one of {', '.join(MODES)}")
        args += ["--mode", mode]
    return shlex.join(["python", "-m", "crossfed", command, *args, *extra_args])


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


def package_to_ship(working_dir: Path) -> Path:
    """The crossfed package the job runs: the working tree's platform/crossfed, else the client's own."""
    in_tree = working_dir / "platform" / "crossfed"
    if (in_tree / "__init__.py").is_file():
        return in_tree.resolve()
    import crossfed

    return Path(crossfed.__file__).resolve().parent


def package_version(package: Path) -> str:
    """`__version__` of a crossfed package directory, read without importing it (it may not be ours)."""
    found = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', (package / "__init__.py").read_text(), re.M)
    if not found:
        raise CrossfedError(f"{package / '__init__.py'}: no __version__ in the package to ship")
    return found.group(1)


def cluster_version(client) -> str | None:
    """The crossfed version installed on the cluster (its head's image); None when it has none.

    A tiny job without runtime_env asks the head's Python, then is deleted again.
    """
    probe = client.submit_job(
        entrypoint="python -c \"import importlib.metadata as m; print('crossfed-version', m.version('crossfed'))\"",
        metadata={"crossfed.command": "version-probe"})
    deadline = time.monotonic() + VERSION_PROBE_TIMEOUT_S
    while not client.get_job_status(probe).is_terminal():
        if time.monotonic() > deadline:
            client.stop_job(probe)
            raise CrossfedError(f"the cluster did not run the version probe job {probe} within "
                                f"{VERSION_PROBE_TIMEOUT_S:.0f} s: is it out of CPUs? (--no-version-check skips it)")
        time.sleep(0.5)
    found = re.search(r"^crossfed-version (\S+)$", client.get_job_logs(probe), re.M)
    client.delete_job(probe)
    return found.group(1) if found else None


def version_mismatch(shipped: str, installed: str | None) -> str | None:
    """The warning for shipping crossfed `shipped` to a cluster that has `installed`; None when they match."""
    if installed == shipped:
        return None
    if installed is None:
        return (f"the cluster has no crossfed installed: the job ships crossfed {shipped}, but its dependencies "
                "(torch, deepspeed, mlflow, ...) must come from the cluster's image")
    return (f"the cluster's image has crossfed {installed}, the job ships crossfed {shipped}: it runs your code "
            "on the image's dependencies; rebuild the image (Dockerfile) if they changed")


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
    check_version: bool = True,
    warn: Callable[[str], None] = lambda message: None,
) -> str:
    """Submit one crossfed run with the working tree's code; returns the Ray job's submission id.

    `warn` receives the version-mismatch warning, if any.
    """
    working_dir = Path(working_dir)
    config_path = _config_inside(Path(config), working_dir)
    if validate and command == "study":
        from crossfed.study.config import load_study

        load_study(working_dir / config_path)  # fail here, not minutes later on the cluster
    elif validate and command != "sweep":  # sweep files are tuning specs, not run configs
        from crossfed.config import load_config

        load_config(working_dir / config_path)
    entrypoint = build_entrypoint(command, config_path, mode, extra_args)
    package = package_to_ship(working_dir)
    client = job_client(address)
    if check_version:
        message = version_mismatch(package_version(package), cluster_version(client))
        if message:
            warn(message)
    # A job's log is what the job prints: everything goes there (`crossfed jobs logs`, the Ray dashboard),
    # not to a log file inside the job's temporary working directory.
    runtime_env = {"working_dir": str(working_dir.resolve()), "py_modules": [str(package)],
                   "excludes": WORKING_DIR_EXCLUDES, "env_vars": {"CROSSFED_VERBOSE": "1"}}
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
