"""Rendered RayCluster and RayJob objects against KubeRay's own CRD schemas (v1.6.2), unknown fields rejected.

The CRDs are the ones KubeRay publishes (../shared/kuberay-crds/, see its README). The API server prunes
fields a structural schema does not declare, so a misspelt or misplaced field would be dropped silently by a
real cluster; here it is an error.
"""

import copy
import os
from pathlib import Path

import jsonschema
import pytest
import yaml

from .conftest import EXAMPLE_FILES, REPO_ROOT, TWO, by_kind, render



def _crd_folder() -> Path:
    """$CROSSFED_KUBERAY_CRDS, else the nearest shared/kuberay-crds/v1.6.2 beside the checkout or above it."""
    if "CROSSFED_KUBERAY_CRDS" in os.environ:
        return Path(os.environ["CROSSFED_KUBERAY_CRDS"])
    candidates = [folder / "shared" / "kuberay-crds" / "v1.6.2" for folder in (REPO_ROOT, *REPO_ROOT.parents)]
    return next((c for c in candidates if c.is_dir()), candidates[1])


KUBERAY_CRDS = _crd_folder()


def strict(node):
    """An openAPIV3Schema as a JSON schema that rejects what the CRD does not declare."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: strict(value) for key, value in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        node.setdefault("additionalProperties", False)
    return node


@pytest.fixture(scope="module")
def validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    if not KUBERAY_CRDS.is_dir():
        pytest.skip(f"KubeRay CRDs not found at {KUBERAY_CRDS} (set CROSSFED_KUBERAY_CRDS to their v1.6.2 folder)")
    found = {}
    for path in KUBERAY_CRDS.glob("*.yaml"):
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 24k lines each
        for served in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{served['name']}", crd["spec"]["names"]["kind"])
            found[key] = jsonschema.Draft7Validator(strict(served["schema"]["openAPIV3Schema"]))
    assert {("ray.io/v1", "RayCluster"), ("ray.io/v1", "RayJob")} <= set(found)
    return found


def errors(validators, obj: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}"
            for e in validators[(obj["apiVersion"], obj["kind"])].iter_errors(obj)]


@pytest.mark.parametrize("values", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_rendered_ray_objects_match_the_kuberay_crds(helm, validators, values):
    objects = [o for o in render(helm, "-f", str(values)) if o["apiVersion"].startswith("ray.io/")]
    assert by_kind(objects, "RayCluster")
    for obj in objects:
        assert errors(validators, obj) == [], obj["kind"]


def test_every_optional_feature_at_once_matches_the_crds(helm, validators):
    """Autoscaling, per-group env/volumes, service accounts and the RayJob together."""
    objects = render(helm, "-f", TWO, "--set", "ray.autoscaling.enabled=true", "--set", "experiments.cms.minReplicas=0",
                     "--set", "experiments.cms.maxReplicas=4", "--set", "serviceAccount.create=true",
                     "--set", "experiments.atlas.serviceAccountName=atlas", "--set", "ray.head.annotations.a=b",
                     "--set-json", 'experiments.cms.envFrom=[{"secretRef": {"name": "cms-data"}}]',
                     "--set-json", 'experiments.cms.volumes=[{"name": "ev", "emptyDir": {}}]',
                     "--set-json", 'experiments.cms.volumeMounts=[{"name": "ev", "mountPath": "/ev"}]')
    ray_objects = [o for o in objects if o["apiVersion"].startswith("ray.io/")]
    assert {o["kind"] for o in ray_objects} == {"RayCluster", "RayJob"}
    for obj in ray_objects:
        assert errors(validators, obj) == [], obj["kind"]


@pytest.mark.parametrize("path, field", [
    (("spec",), "authOption"),
    (("spec", "workerGroupSpecs", 0), "label"),
    (("spec", "headGroupSpec", "template", "spec", "containers", 0), "envfrom"),
])
def test_an_unknown_field_is_rejected(helm, validators, path, field):
    (cluster,) = by_kind(render(helm, "-f", TWO), "RayCluster")
    broken = copy.deepcopy(cluster)
    node = broken
    for step in path:
        node = node[step]
    node[field] = {}
    assert any("Additional properties are not allowed" in e and field in e for e in errors(validators, broken))
