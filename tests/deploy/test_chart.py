"""The Helm chart: lint, render the example values, validate the objects, check the security defaults."""

import re

import pytest
import yaml
from kubernetes_validate.utils import latest_version, validate

from crossfed.config import config_from_dict

from .conftest import CHART, EXAMPLES, REPO_ROOT, render, run_helm

TWO = str(EXAMPLES / "two-experiments-bundled.yaml")
THREE = str(EXAMPLES / "three-experiments-external-db.yaml")


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


@pytest.mark.parametrize("values", [TWO, THREE])
def test_lint_examples(helm, values):
    done = run_helm(helm, "lint", str(CHART), "-f", values, "--strict")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", [TWO, THREE])
def test_core_objects_validate_against_kubernetes_schema(helm, values):
    objects = render(helm, "-f", values)
    version = latest_version()
    core = [o for o in objects if not o["apiVersion"].startswith("ray.io/")]
    assert {"Deployment", "Service", "NetworkPolicy"} <= {o["kind"] for o in core}
    for obj in core:
        validate(obj, version, strict=True)
    # KubeRay's CRDs are not in the Kubernetes schema: validate their pod templates as Pods.
    for spec in pod_specs(objects):
        validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}, version, strict=True)


def test_one_worker_group_per_experiment_with_ray_label_gpus_and_node_selector(helm):
    objects = render(helm, "-f", TWO)
    (cluster,) = by_kind(objects, "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["spec"]["rayVersion"] == "2.60.0"
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cms", "atlas"}
    for name, group in groups.items():
        assert group["labels"] == {"crossfed.io/experiment": name}
        assert group["replicas"] == 2
        pod = group["template"]["spec"]
        assert pod["nodeSelector"] == {"crossfed.io/site": f"cern-{name}"}
        (container,) = pod["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert container["resources"]["limits"]["cpu"] == "8"
        assert container["resources"]["limits"]["memory"] == "48Gi"


def test_three_experiments_overrides_and_external_database(helm):
    objects = render(helm, "-f", THREE)
    (cluster,) = by_kind(objects, "RayCluster")
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cms", "atlas", "lhcb"}
    lhcb = groups["lhcb"]["template"]["spec"]["containers"][0]
    assert lhcb["resources"] == {"requests": {"cpu": "8", "memory": "32Gi"}, "limits": {"cpu": "8", "memory": "32Gi"}}
    assert lhcb["image"].endswith(":0.1.0")
    assert groups["cms"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    # External DB and S3: nothing bundled, no Secret made by the chart.
    assert not by_kind(objects, "StatefulSet") and not by_kind(objects, "Secret")
    (mlflow,) = by_kind(objects, "Deployment")
    env = {e["name"]: e for e in mlflow["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == "crossfed-mlflow-db"
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "https://s3.example.org"


def test_mlflow_uses_basic_auth_postgres_and_s3(helm):
    objects = render(helm, "-f", TWO)
    deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
    mlflow = deployments["demo-crossfed-mlflow"]["spec"]["template"]["spec"]
    script = mlflow["containers"][0]["command"][-1]
    assert "--app-name basic-auth" in script and "s3://mlflow/mlflow" in script
    env = {e["name"]: e for e in mlflow["containers"][0]["env"]}
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "crossfed-mlflow-admin"
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql://mlflow:$(POSTGRES_PASSWORD)@demo-crossfed-postgresql")
    assert [c["name"] for c in mlflow["initContainers"]] == ["create-bucket"]
    (postgres,) = by_kind(objects, "StatefulSet")
    assert postgres["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "demo-crossfed-minio" in deployments


def test_rayjob_runs_crossfed_pretrain_on_a_valid_config_from_a_configmap(helm):
    objects = render(helm, "-f", TWO)
    (job,) = by_kind(objects, "RayJob")
    assert job["spec"]["entrypoint"] == "crossfed pretrain /etc/crossfed/run.yaml --mode federated"
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": "demo-crossfed-ray"}
    (config_map,) = by_kind(objects, "ConfigMap")
    config = config_from_dict(yaml.safe_load(config_map["data"]["run.yaml"]))
    assert config.tracking.uri == "http://demo-crossfed-mlflow:5000"
    assert {e.cluster.node_group for e in config.experiments.values()} == {"cms", "atlas"}
    (cluster,) = by_kind(objects, "RayCluster")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    assert head["volumes"][0]["configMap"]["name"] == config_map["metadata"]["name"]


def test_rayjob_is_off_by_default(helm):
    objects = render(helm, "-f", THREE)
    assert not by_kind(objects, "RayJob") and not by_kind(objects, "ConfigMap")


@pytest.mark.parametrize("values", [TWO, THREE])
def test_every_container_is_non_root_without_capabilities(helm, values):
    specs = pod_specs(render(helm, "-f", values))
    assert len(specs) >= 4
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context.get("privileged", False) is False


@pytest.mark.parametrize("values", [TWO, THREE])
def test_services_are_cluster_ip_and_network_policies_admit_only_the_release(helm, values):
    objects = render(helm, "-f", values)
    for service in by_kind(objects, "Service"):
        assert service["spec"]["type"] == "ClusterIP"
    (cluster,) = by_kind(objects, "RayCluster")
    assert cluster["spec"]["headGroupSpec"]["serviceType"] == "ClusterIP"
    policies = by_kind(objects, "NetworkPolicy")
    ports = set()
    for policy in policies:
        assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "demo"
        for rule in policy["spec"]["ingress"]:
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}  # no namespaceSelector, no ipBlock
                assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "demo"
            ports |= {p["port"] for p in rule.get("ports", [])}
    assert {6379, 8265, 10001, 5000} <= ports


def test_ray_token_auth_from_secret_in_every_ray_container(helm):
    objects = render(helm, "-f", TWO)
    ray_specs = pod_specs([o for o in objects if o["apiVersion"].startswith("ray.io/")])
    assert len(ray_specs) == 4  # head, cms, atlas, job submitter
    for spec in ray_specs:
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "crossfed-ray-token", "key": "auth_token"}


def storage_env(objects: list[dict]) -> list[dict]:
    """Each Ray container's run-storage variables, {name: value or secretKeyRef}."""
    ray_specs = pod_specs([o for o in objects if o["apiVersion"].startswith("ray.io/")])
    wanted = ("CROSSFED_STORAGE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    return [{e["name"]: e.get("value") or e["valueFrom"]["secretKeyRef"] for e in spec["containers"][0]["env"]
             if e["name"] in wanted} for spec in ray_specs]


@pytest.mark.parametrize("values, expected", [
    (TWO, {"CROSSFED_STORAGE": "s3://mlflow/runs", "AWS_ENDPOINT_URL": "http://demo-crossfed-minio:9000",
           "AWS_ACCESS_KEY_ID": {"name": "crossfed-minio", "key": "rootUser"},
           "AWS_SECRET_ACCESS_KEY": {"name": "crossfed-minio", "key": "rootPassword"}}),
    (THREE, {"CROSSFED_STORAGE": "s3://crossfed-mlflow/runs", "AWS_ENDPOINT_URL": "https://s3.example.org",
             "AWS_ACCESS_KEY_ID": {"name": "crossfed-mlflow-s3", "key": "AWS_ACCESS_KEY_ID"},
             "AWS_SECRET_ACCESS_KEY": {"name": "crossfed-mlflow-s3", "key": "AWS_SECRET_ACCESS_KEY"}}),
])
def test_every_ray_container_stores_runs_in_the_artifact_s3_store(helm, values, expected):
    envs = storage_env(render(helm, "-f", values))
    assert len(envs) >= 3  # head, one group per experiment (and the job submitter)
    assert all(env == expected for env in envs), envs


def test_run_storage_of_its_own_or_none_refused(helm):
    envs = storage_env(render(helm, "-f", THREE, "--set", "storage.uri=s3://runs-bucket/pretrain",
                              "--set", "storage.existingSecret=runs-s3"))
    assert all(env == {"CROSSFED_STORAGE": "s3://runs-bucket/pretrain",
                       "AWS_ACCESS_KEY_ID": {"name": "runs-s3", "key": "AWS_ACCESS_KEY_ID"},
                       "AWS_SECRET_ACCESS_KEY": {"name": "runs-s3", "key": "AWS_SECRET_ACCESS_KEY"}} for env in envs), envs
    done = run_helm(helm, "template", "demo", str(CHART), "-f", THREE, "--set", "mlflow.enabled=false")
    assert done.returncode != 0 and "Ray pods share no disk" in done.stderr
    done = run_helm(helm, "template", "demo", str(CHART), "-f", THREE, "--set", "storage.uri=/mnt/runs")
    assert done.returncode != 0 and "/storage/uri" in done.stderr  # a local path: refused by the schema


REQUIRED_CREDENTIALS = {
    "ray.auth.existingSecret": "Ray token authentication needs a token",
    "mlflow.auth.existingSecret": "MLflow authentication needs admin credentials",
    "postgresql.auth.existingSecret": "the bundled PostgreSQL needs a password",
    "minio.auth.existingSecret": "the bundled MinIO needs credentials",
}


@pytest.mark.parametrize("missing", sorted(REQUIRED_CREDENTIALS))
def test_template_fails_clearly_without_credentials(helm, missing):
    done = run_helm(helm, "template", "demo", str(CHART), "-f", TWO, "--set", f"{missing}=")
    assert done.returncode != 0
    assert REQUIRED_CREDENTIALS[missing] in done.stderr


def test_secrets_hold_only_the_credentials_given(helm):
    given = {"ray.auth.token": "tok-3f9a", "mlflow.auth.adminPassword": "adm-81c2", "postgresql.auth.password": "pg-77d0",
             "minio.auth.rootUser": "minio-user", "minio.auth.rootPassword": "mn-5e1b"}
    args = ["-f", TWO]
    for key, value in given.items():
        args += ["--set", f"{key}={value}", "--set", f"{key.rsplit('.', 1)[0]}.existingSecret="]
    objects = render(helm, *args)
    secrets = by_kind(objects, "Secret")
    assert {s["metadata"]["name"] for s in secrets} == {
        "demo-crossfed-ray-token", "demo-crossfed-mlflow-admin", "demo-crossfed-postgresql", "demo-crossfed-minio"}
    values = {v for s in secrets for v in s["stringData"].values()}
    assert values == set(given.values()) | {"admin"}


def test_default_values_hold_no_credential():
    values = (CHART / "values.yaml").read_text()
    for match in re.finditer(r"^\s*(\w*(?:password|token|Password|Token|rootUser))\s*:\s*(.*)$", values, re.M):
        assert match.group(2).strip() in ('""', "auth_token"), match.group(0)


def test_dockerfile_base_image_matches_the_pinned_ray_version():
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    ray_version = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', pyproject).group(1)
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile, re.M).group(1) == ray_version
    assert "FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}${RAY_VARIANT}" in dockerfile
    assert re.search(r"^ARG PYTHON_TAG=py311$", dockerfile, re.M)
    assert re.search(r"^USER ray$", dockerfile, re.M)
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart_values["rayVersion"] == ray_version
