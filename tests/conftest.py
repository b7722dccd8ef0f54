"""Shared test fixtures. `samples`: small generated CMS-like and ATLAS-like ROOT files, cached on disk."""

import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import fcntl  # noqa: E402
import hashlib  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_EVENTS = 300  # after preselection
SAMPLE_SEEDS = {("cms", "ttbar"): 11, ("cms", "tth"): 12, ("atlas", "ttbar"): 21, ("atlas", "tth"): 22}


def _samples_key() -> str:
    """Hash of everything that shapes the samples: the generator's source, its versions and our settings."""
    from importlib.metadata import version

    import crossfed.generate

    digest = hashlib.sha256(repr((SAMPLE_EVENTS, sorted(SAMPLE_SEEDS.items()), version("pythia8mc"))).encode())
    for module in ("processes", "pythia", "decay_filter", "detector", "core", "writer"):  # what shapes the events
        digest.update((Path(crossfed.generate.__file__).parent / f"{module}.py").read_bytes())
    digest.update((Path(crossfed.generate.__file__).parent.parent / "kinematics.py").read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def samples() -> dict[str, dict[str, Path]]:
    """samples[detector][process] -> Path of a ~300-event file (ttbar, tth; cms, atlas), fixed seeds.

    Generated once into .crossfed/test-samples/<key>/ and reused; built in a private folder under a file
    lock and renamed into place, so racing pytest processes generate once and never see a partial set.
    """
    from crossfed.generate import connect_ray, generate

    final = REPO_ROOT / ".crossfed" / "test-samples" / _samples_key()
    paths = {det: {proc: final / f"{det}_{proc}.root" for d, proc in SAMPLE_SEEDS if d == det} for det in ("cms", "atlas")}
    final.parent.mkdir(parents=True, exist_ok=True)
    # One process generates while the others wait on the lock; the rename makes the set appear whole.
    with open(final.with_name(f"{final.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.is_dir():
            building = final.with_name(f"{final.name}.building-{os.getpid()}")
            shutil.rmtree(building, ignore_errors=True)
            building.mkdir()
            try:
                with connect_ray(num_cpus=2):  # one Ray for the four files
                    for (detector, process), seed in SAMPLE_SEEDS.items():
                        generate(process, detector, SAMPLE_EVENTS, seed, building / f"{detector}_{process}.root",
                                 workers=2, progress=False)
                building.rename(final)
            except OSError:
                if not final.is_dir():  # a set put there without the lock is as good as ours
                    raise
            finally:
                shutil.rmtree(building, ignore_errors=True)
    return paths


def _restore_tracking_uri():
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


# mlflow.set_tracking_uri() writes MLFLOW_TRACKING_URI into os.environ, and crossfed honours that variable in
# the commands the tests start: keep one test's (or one module fixture's) store from the next.
_no_leaked_tracking_uri = pytest.fixture(autouse=True)(_restore_tracking_uri)
_no_leaked_tracking_uri_between_modules = pytest.fixture(scope="module", autouse=True)(_restore_tracking_uri)


@pytest.fixture
def python_signal_handlers():
    """Python's own SIGINT and SIGTERM handlers, whatever this process inherited (a background job starts
    with SIGINT ignored) or an earlier test left, restored afterwards."""
    import signal

    before = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
              signal.SIGTERM: signal.signal(signal.SIGTERM, signal.SIG_DFL)}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint: moto's standalone server on 127.0.0.1 (a free port), with the AWS variables set in
    this process, so s3fs, uproot and every Ray process started afterwards reach it as they would a bucket."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    variables = dict(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                     AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    yield variables["AWS_ENDPOINT_URL"]
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, request) -> str:
    """A new, empty bucket on the local S3 server; its name."""
    import boto3

    name = "b" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:20]
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def cluster():
    """A real multi-node Ray cluster on this machine: a head with no CPUs (nothing runs there by accident)
    and two nodes of 2 CPUs labelled node group cms and atlas. Yields {group: node id}; one per module."""
    import ray
    from crossfed.federation.placement import EXPERIMENT_LABEL
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = {group: cluster.add_node(num_cpus=2, labels={EXPERIMENT_LABEL: group}) for group in ("cms", "atlas")}
    ray.init(address=cluster.address, logging_level="WARNING")
    yield {group: node.node_id for group, node in nodes.items()}
    ray.shutdown()
    cluster.shutdown()
