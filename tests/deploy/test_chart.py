"""The Helm chart: lint, render the examples, validate the objects, check what each value does."""

import json
import re
import subprocess
import tomllib
from importlib.metadata import version

import pytest
import yaml
from kubernetes_validate.utils import latest_version, validate

from crossfed.config import config_from_dict
from crossfed.submit import build_entrypoint

from .conftest import (AUTOSCALING, CHART, EXAMPLE_FILES, REPO_ROOT, THREE, TWO, by_kind, env_of, pod_specs,
                       ray_groups, render, run_helm)


@pytest.mark.parametrize("values", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_lint_examples(helm, values):
    done = run_helm(helm, "lint", str(CHART), "-f", str(values), "--strict")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_every_example_passes_kubernetes_validate_strict(helm, values, tmp_path):
    """`kubernetes-validate --strict` on the whole rendering; it knows no CRDs, so those are only named."""
    manifest = tmp_path / "rendered.yaml"
    done = run_helm(helm, "template", "demo", str(CHART), "--namespace", "physics", "-f", str(values))
    assert done.returncode == 0, done.stderr
    manifest.write_text(done.stdout)
    checked = subprocess.run(["kubernetes-validate", "--strict", str(manifest)], capture_output=True, text=True,
                             timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = (checked.stdout + checked.stderr).splitlines()
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    custom = {"ray.io/v1", "monitoring.coreos.com/v1"}
    assert sum("passed for resource" in line for line in lines) == sum(o["apiVersion"] not in custom for o in objects)
    unknown = {m.group(1) for line in lines if (m := re.search(r"api version (\S+) ", line))}
    assert unknown <= custom, lines
    # KubeRay's CRDs embed pod templates: validate those as Pods (the CRDs themselves: test_crds.py).
    for spec in pod_specs(objects):
        validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}, latest_version(),
                 strict=True)


def test_values_schema_covers_every_default_value():
    """Each value has a schema entry: every key of values.yaml is declared in values.schema.json."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value, node, path):
        if not isinstance(value, dict) or node.get("type") != "object" or "properties" not in node:
            return
        for key, child in value.items():
            assert key in node["properties"], f"{path}{key} has no entry in values.schema.json"
            walk(child, node["properties"][key], f"{path}{key}.")

    walk(values, schema, "")


FEATURES = {  # each value of this issue, and where it is given in an example
    "serviceAccount.create": THREE, "experiments.atlas.serviceAccountName": THREE,
    "experiments.cms.envFrom": THREE, "experiments.atlas.env": THREE, "experiments.atlas.volumes": THREE,
    "experiments.atlas.volumeMounts": THREE, "experiments.cms.runStorageSecret": THREE,
    "experiments.lhcb.affinity": THREE, "mlflow.affinity": THREE, "mlflow.tolerations": THREE,
    "mlflow.nodeSelector": THREE, "mlflow.ingress.enabled": THREE, "mlflow.externalDatabase.sslmode": THREE,
    "metrics.serviceMonitor.enabled": THREE, "networkPolicy.kuberayOperator.namespace": THREE,
    "runStorage.uri": THREE, "ray.autoscaling.enabled": AUTOSCALING, "experiments.cms.maxReplicas": AUTOSCALING,
    "experiments.cms.annotations": AUTOSCALING, "postgresql.nodeSelector": AUTOSCALING,
    "postgresql.tolerations": AUTOSCALING, "minio.affinity": AUTOSCALING, "minio.nodeSelector": AUTOSCALING,
    "mlflow.auth.jobUser.existingSecret": TWO, "rayJob.enabled": TWO,
}


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_every_feature_has_an_example(feature):
    value = yaml.safe_load(open(FEATURES[feature]))
    for key in feature.split("."):
        assert key in value, f"{feature} is not set in {FEATURES[feature]}"
        value = value[key]
    assert value not in (None, "", [], {}, False)


@pytest.mark.parametrize("setting, misspelt", [("experiments.cms.gpus=1", "gpus"),
                                               ("mlflow.ingres.enabled=true", "ingres"),
                                               ("runstorage.uri=s3://b/r", "runstorage")])
def test_schema_rejects_unknown_keys(helm, setting, misspelt):
    done = run_helm(helm, "template", "demo", str(CHART), "-f", TWO, "--set", setting)
    assert done.returncode != 0 and f"'{misspelt}' not allowed" in done.stderr


def test_one_worker_group_per_experiment_with_ray_label_gpus_and_node_selector(helm):
    objects = render(helm, "-f", TWO)
    (cluster,) = by_kind(objects, "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["spec"]["rayVersion"] == "2.60.0"
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cms", "atlas"}
    for name, group in groups.items():
        assert group["labels"] == {"crossfed.io/experiment": name}
        assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 2
        pod = group["template"]["spec"]
        assert pod["nodeSelector"] == {"crossfed.io/site": f"cern-{name}"}
        (container,) = pod["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert container["resources"]["limits"]["cpu"] == "8"
        assert container["resources"]["limits"]["memory"] == "48Gi"
    assert "enableInTreeAutoscaling" not in cluster["spec"]


def test_no_experiments_is_a_clear_error(helm):
    done = run_helm(helm, "template", "demo", str(CHART), "--set", "ray.auth.token=t")
    assert done.returncode != 0 and "at '/experiments': minProperties" in done.stderr


def test_three_experiments_overrides_and_external_database(helm):
    objects = render(helm, "-f", THREE)
    groups = ray_groups(objects)
    assert set(groups) == {"head", "cms", "atlas", "lhcb"}
    lhcb = groups["lhcb"]["containers"][0]
    assert lhcb["resources"] == {"requests": {"cpu": "8", "memory": "32Gi"}, "limits": {"cpu": "8", "memory": "32Gi"}}
    assert lhcb["image"].endswith(":0.1.0")
    assert groups["cms"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    # External DB and S3: nothing bundled, no Secret made by the chart.
    assert not by_kind(objects, "StatefulSet") and not by_kind(objects, "Secret")
    (mlflow,) = by_kind(objects, "Deployment")
    env = env_of(mlflow["spec"]["template"]["spec"]["containers"][0])
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "crossfed-mlflow-db", "key": "password"}
    assert env["PGSSLMODE"]["value"] == "require"
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == "postgresql://mlflow@dbod-crossfed.cern.ch:6600/mlflow"
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "https://s3.example.org"


def test_mlflow_starts_with_auth_a_secret_key_and_migrations_first(helm):
    objects = render(helm, "-f", TWO)
    deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
    mlflow = deployments["demo-crossfed-mlflow"]
    assert mlflow["spec"]["strategy"] == {"type": "Recreate"}  # no two versions on one database
    pod = mlflow["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["command"][:3] == ["mlflow", "server", "--app-name=basic-auth"]
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in server["command"]
    assert "--artifacts-destination=s3://mlflow/mlflow" in server["command"]
    env = env_of(server)
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "crossfed-mlflow-admin", "key": "flaskSecretKey"}
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "crossfed-mlflow-admin"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "crossfed-postgresql", "key": "password"}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == "postgresql://mlflow@demo-crossfed-postgresql:5432/mlflow"
    # The bucket, then the schema migration, then the job user; all before the server.
    init = {c["name"]: c for c in pod["initContainers"]}
    assert list(init) == ["create-bucket", "db-upgrade", "job-user"]
    assert init["db-upgrade"]["command"] == ["mlflow", "db", "upgrade", "$(MLFLOW_BACKEND_STORE_URI)"]
    assert env_of(init["job-user"])["JOB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "crossfed-mlflow-job-user", "key": "password"}
    (auth_config,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"] == "demo-crossfed-mlflow-auth"]
    assert "database_uri = postgresql://mlflow@demo-crossfed-postgresql:5432/mlflow" in auth_config["data"]["basic_auth.ini"]
    (postgres,) = by_kind(objects, "StatefulSet")
    assert postgres["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "demo-crossfed-minio" in deployments


def test_no_credential_outside_secrets(helm):
    """Every credential given is in a Secret and nowhere else: not in a URL, a command, a ConfigMap or env."""
    given = {"ray.auth.token": "tok-3f9a@x", "mlflow.auth.adminPassword": "adm-81c2:y", "mlflow.auth.flaskSecretKey": "fsk-0d1e",
             "mlflow.auth.jobUser.password": "job-55a1%z", "postgresql.auth.password": "p@ss:w/rd%",
             "minio.auth.rootUser": "minio-user", "minio.auth.rootPassword": "mn-5e1b"}
    args = ["-f", TWO, "--set", "mlflow.auth.existingSecret=", "--set", "mlflow.auth.jobUser.existingSecret="]
    for key, value in given.items():
        args += ["--set-string", f"{key}={value}", "--set", f"{key.rsplit('.', 1)[0]}.existingSecret="]
    objects = render(helm, *args)
    secrets = by_kind(objects, "Secret")
    assert {v for s in secrets for v in s["stringData"].values()} == set(given.values()) | {"admin", "crossfed"}
    elsewhere = json.dumps([o for o in objects if o["kind"] != "Secret"])
    for value in given.values():
        assert value not in elsewhere


def test_ray_pods_log_to_mlflow_as_the_job_user_never_the_admin(helm):
    objects = render(helm, "-f", TWO)
    ray_specs = pod_specs([o for o in objects if o["apiVersion"].startswith("ray.io/")])
    rendered = json.dumps(ray_specs)
    assert "crossfed-mlflow-admin" not in rendered and "MLFLOW_AUTH_ADMIN" not in rendered
    for group, spec in ray_groups(objects).items():
        env = env_of(spec["containers"][0])
        assert env["MLFLOW_TRACKING_URI"]["value"] == "http://demo-crossfed-mlflow:5000"
        for key, variable in (("username", "MLFLOW_TRACKING_USERNAME"), ("password", "MLFLOW_TRACKING_PASSWORD")):
            assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": "crossfed-mlflow-job-user", "key": key}


def test_rayjob_runs_the_submit_entrypoint_on_a_config_uploaded_by_the_submitter(helm):
    objects = render(helm, "-f", TWO)
    (job,) = by_kind(objects, "RayJob")
    assert job["spec"]["entrypoint"] == build_entrypoint("pretrain", "run.yaml", "federated")
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"]) == {"working_dir": "/etc/crossfed/run",
                                                              "env_vars": {"CROSSFED_VERBOSE": "1"}}
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": "demo-crossfed-ray"}
    submitter = job["spec"]["submitterPodTemplate"]["spec"]
    (mount,) = [m for m in submitter["containers"][0]["volumeMounts"] if m["name"] == "run-config"]
    assert mount == {"name": "run-config", "mountPath": "/etc/crossfed/run/run.yaml", "subPath": "run.yaml",
                     "readOnly": True}
    (config_map,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"] == job["metadata"]["name"]]
    config = config_from_dict(yaml.safe_load(config_map["data"]["run.yaml"]))
    assert config.tracking.uri == "http://demo-crossfed-mlflow:5000"
    assert {e.cluster.node_group for e in config.experiments.values()} == {"cms", "atlas"}
    # Extra arguments are quoted as `crossfed submit` quotes them.
    args = ["--set", "rayJob.command=finetune", "--set-json", 'rayJob.args=["--epochs", "2 3", "it\'s"]']
    (job,) = by_kind(render(helm, "-f", TWO, *args), "RayJob")
    assert job["spec"]["entrypoint"] == build_entrypoint("finetune", "run.yaml", None, ["--epochs", "2 3", "it's"])


def test_enabling_the_rayjob_leaves_the_ray_pods_alone(helm):
    """KubeRay does not roll running Ray pods: `helm upgrade` that enables the RayJob must not change them."""
    with_job = by_kind(render(helm, "-f", TWO), "RayCluster")
    without = by_kind(render(helm, "-f", TWO, "--set", "rayJob.enabled=false"), "RayCluster")
    assert with_job == without


def test_rayjob_name_is_unique_per_config_and_run_id(helm):
    def job_name(*args):
        (job,) = by_kind(render(helm, "-f", TWO, *args), "RayJob")
        return job["metadata"]["name"]

    base = job_name()
    assert re.fullmatch(r"demo-crossfed-pretrain-[0-9a-f]{8}", base)
    assert job_name() == base  # deterministic: an unchanged upgrade keeps the job
    assert job_name("--set", "rayJob.config.federation.rounds=7") != base
    assert job_name("--set", "rayJob.runId=2") != base
    long_release = render(helm, "-f", TWO, release="a-release-name-that-is-quite-long-indeed")
    (job,) = by_kind(long_release, "RayJob")
    assert len(job["metadata"]["name"]) <= 47 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"])


@pytest.mark.parametrize("setting, message", [
    ("rayJob.config.experiments.cms.cluster.node_group=alice",
     'rayJob.config.experiments.cms.cluster.node_group is "alice", which is not a worker group of this release '
     "(the keys of experiments: atlas, cms)"),
    ("rayJob.config.experiments.cms.cluster.node_group=",
     "rayJob.config.experiments.cms.cluster.node_group is not set"),
])
def test_template_checks_every_node_group_is_a_worker_group(helm, setting, message):
    done = run_helm(helm, "template", "demo", str(CHART), "-f", TWO, "--set", setting)
    assert done.returncode != 0
    assert message in done.stderr


def test_rayjob_is_off_by_default(helm):
    objects = render(helm, "-f", THREE)
    assert not by_kind(objects, "RayJob")
    assert [c["metadata"]["name"] for c in by_kind(objects, "ConfigMap")] == ["demo-crossfed-mlflow-auth"]


def test_operator_authenticates_with_the_token_secret(helm):
    (cluster,) = by_kind(render(helm, "-f", TWO), "RayCluster")
    assert cluster["spec"]["authOptions"] == {"mode": "token", "secretName": "crossfed-ray-token"}
    for spec in pod_specs(render(helm, "-f", TWO)):
        for container in spec["containers"]:
            if "RAY_AUTH_TOKEN" in env_of(container):  # the key KubeRay reads
                assert env_of(container)["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "auth_token"


@pytest.mark.parametrize("values", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_every_container_is_non_root_read_only_with_a_writable_tmp(helm, values):
    specs = pod_specs(render(helm, "-f", str(values)))
    assert len(specs) >= 4
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        tmp = [v for v in spec["volumes"] if v["name"] == "tmp"]
        assert tmp == [{"name": "tmp", "emptyDir": {}}]
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context.get("privileged", False) is False
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_service_account_tokens_are_not_mounted_unless_asked(helm):
    for spec in pod_specs(render(helm, "-f", TWO)):
        assert spec["automountServiceAccountToken"] is False
        assert "serviceAccountName" not in spec
    for spec in pod_specs(render(helm, "-f", TWO, "--set", "serviceAccount.automountToken=true")):
        assert spec["automountServiceAccountToken"] is True


def test_service_account_with_annotations_for_workload_identity(helm):
    objects = render(helm, "-f", THREE)
    (account,) = by_kind(objects, "ServiceAccount")
    assert account["metadata"]["name"] == "crossfed"
    assert account["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "crossfed@physics-project.iam.gserviceaccount.com"}
    assert account["automountServiceAccountToken"] is False
    names = {group: spec.get("serviceAccountName") for group, spec in ray_groups(objects).items()}
    assert names == {"head": "crossfed", "cms": "crossfed", "atlas": "crossfed-atlas", "lhcb": "crossfed"}
    (mlflow,) = by_kind(objects, "Deployment")
    assert mlflow["spec"]["template"]["spec"]["serviceAccountName"] == "crossfed"


def test_per_group_env_env_from_and_volumes(helm):
    groups = ray_groups(render(helm, "-f", THREE))
    cms, atlas = groups["cms"], groups["atlas"]
    assert cms["containers"][0]["envFrom"] == [{"secretRef": {"name": "cms-data"}}]
    assert "envFrom" not in atlas["containers"][0]
    assert env_of(atlas["containers"][0])["ATLAS_EVENTS"]["value"] == "/data/atlas"
    assert "ATLAS_EVENTS" not in env_of(cms["containers"][0])
    assert {"name": "events", "persistentVolumeClaim": {"claimName": "atlas-events", "readOnly": True}} in atlas["volumes"]
    assert {"name": "events", "mountPath": "/data/atlas", "readOnly": True} in atlas["containers"][0]["volumeMounts"]
    assert [v["name"] for v in cms["volumes"]] == ["tmp"]
    affinity = groups["lhcb"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert affinity["nodeSelectorTerms"][0]["matchExpressions"][0]["key"] == "nvidia.com/gpu.present"


def test_scheduling_of_mlflow_postgresql_and_minio(helm):
    objects = render(helm, "-f", AUTOSCALING)
    pods = {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")}
    services = {"node-role.example.org/services": "true"}
    toleration = [{"key": "dedicated", "operator": "Equal", "value": "services", "effect": "NoSchedule"}]
    assert pods["demo-crossfed-mlflow"]["nodeSelector"] == services
    assert pods["demo-crossfed-postgresql"]["nodeSelector"] == services
    assert pods["demo-crossfed-postgresql"]["tolerations"] == toleration
    assert pods["demo-crossfed-minio"]["tolerations"] == toleration
    assert "podAffinity" in pods["demo-crossfed-minio"]["affinity"]
    mlflow = by_kind(render(helm, "-f", THREE), "Deployment")[0]["spec"]["template"]["spec"]
    assert mlflow["tolerations"][0]["value"] == "services" and "podAntiAffinity" in mlflow["affinity"]


def test_autoscaling(helm):
    objects = render(helm, "-f", AUTOSCALING)
    (cluster,) = by_kind(objects, "RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] == 300
    assert spec["autoscalerOptions"]["upscalingMode"] == "Conservative"
    assert spec["autoscalerOptions"]["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in spec["autoscalerOptions"]["volumeMounts"]
    for group in spec["workerGroupSpecs"]:
        assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (0, 1, 8)
    groups = ray_groups(objects)
    assert groups["head"]["automountServiceAccountToken"] is True  # the autoscaler patches the RayCluster
    assert groups["cms"]["automountServiceAccountToken"] is False
    done = run_helm(helm, "template", "demo", str(CHART), "-f", AUTOSCALING, "--set", "experiments.cms.maxReplicas=0")
    assert done.returncode != 0 and "experiments.cms: need minReplicas <= replicas <= maxReplicas" in done.stderr


def test_mlflow_ingress(helm):
    objects = render(helm, "-f", THREE)
    (ingress,) = by_kind(objects, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "mlflow-example-org-tls", "hosts": ["mlflow.example.org"]}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "mlflow.example.org"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "demo-crossfed-mlflow", "port": {"name": "http"}}
    (mlflow,) = by_kind(objects, "Deployment")
    allowed = [a for a in mlflow["spec"]["template"]["spec"]["containers"][0]["command"] if a.startswith("--allowed-hosts=")]
    assert "mlflow.example.org" in allowed[0].split("=", 1)[1].split(",")
    assert not by_kind(render(helm, "-f", TWO), "Ingress")
    done = run_helm(helm, "template", "demo", str(CHART), "-f", TWO, "--set", "mlflow.ingress.enabled=true")
    assert done.returncode != 0 and "mlflow.ingress.hosts" in done.stderr


def test_service_and_pod_monitors_select_the_ray_metrics_port(helm):
    objects = render(helm, "-f", THREE)
    (service_monitor,) = by_kind(objects, "ServiceMonitor")
    (pod_monitor,) = by_kind(objects, "PodMonitor")
    assert service_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # KubeRay's labels of the head Service and of the worker pods.
    assert service_monitor["spec"]["selector"]["matchLabels"] == {"ray.io/cluster": "demo-crossfed-ray", "ray.io/node-type": "head"}
    assert pod_monitor["spec"]["selector"]["matchLabels"] == {"ray.io/cluster": "demo-crossfed-ray", "ray.io/node-type": "worker"}
    assert service_monitor["spec"]["endpoints"] == [{"port": "metrics", "interval": "30s"}]
    (cluster,) = by_kind(objects, "RayCluster")
    assert {"name": "metrics", "containerPort": 8080} in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["metrics-export-port"] == "8080"
    assert not by_kind(render(helm, "-f", TWO), "ServiceMonitor")


def _admitted(policy: dict) -> list[tuple[str, frozenset]]:
    """(peer kind, ports) for each peer of a NetworkPolicy."""
    return [(next(iter(sorted(set(peer) - {"podSelector"})), "podSelector"), frozenset(p["port"] for p in rule.get("ports", [])))
            for rule in policy["spec"]["ingress"] for peer in rule["from"]]


@pytest.mark.parametrize("values", [TWO, THREE])
def test_network_policies_admit_the_release_and_named_outside_peers_only(helm, values):
    objects = render(helm, "-f", values)
    for service in by_kind(objects, "Service"):
        assert service["spec"]["type"] == "ClusterIP"
    (cluster,) = by_kind(objects, "RayCluster")
    assert cluster["spec"]["headGroupSpec"]["serviceType"] == "ClusterIP"
    policies = {p["metadata"]["name"]: p for p in by_kind(objects, "NetworkPolicy")}
    outside = {}
    for name, policy in policies.items():
        assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "demo"
        for rule in policy["spec"]["ingress"]:
            for peer in rule["from"]:
                assert "ipBlock" not in peer
                if "namespaceSelector" in peer:
                    namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    outside[(name, namespace)] = {p["port"] for p in rule["ports"]}
                else:
                    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "demo"
    operator_namespace = "kuberay-system" if values == THREE else "default"
    expected = {("demo-crossfed-ray", operator_namespace): {8265}}
    if values == THREE:  # Prometheus and the ingress controller, each to its one port
        expected |= {("demo-crossfed-ray", "monitoring"): {8080}, ("demo-crossfed-mlflow", "ingress-nginx"): {5000}}
    assert outside == expected
    operator_peer = next(peer for rule in policies["demo-crossfed-ray"]["spec"]["ingress"] for peer in rule["from"]
                         if "namespaceSelector" in peer and 8265 in {p["port"] for p in rule["ports"]})
    assert operator_peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay-operator"}


def test_ray_token_auth_from_secret_in_every_ray_container(helm):
    objects = render(helm, "-f", TWO)
    ray_specs = pod_specs([o for o in objects if o["apiVersion"].startswith("ray.io/")])
    assert len(ray_specs) == 4  # head, cms, atlas, job submitter
    for spec in ray_specs:
        env = env_of(spec["containers"][0])
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "crossfed-ray-token", "key": "auth_token"}


def test_run_storage_on_the_chart_s3_store_with_per_group_credentials(helm):
    groups = ray_groups(render(helm, "-f", THREE))
    for group, spec in groups.items():
        env = env_of(spec["containers"][0])
        assert env["CROSSFED_STORAGE"]["value"] == "s3://crossfed-runs/federated"
        assert env["AWS_ENDPOINT_URL"]["value"] == "https://s3.example.org"
        secret = f"crossfed-runs-{group}"
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "AWS_ACCESS_KEY_ID"}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "AWS_SECRET_ACCESS_KEY"}
    # Bundled MinIO: s3://<its bucket>/runs, with a default Secret for every group or else MinIO's own.
    bundled = ray_groups(render(helm, "-f", TWO, "--set", "experiments.cms.runStorageSecret=cms-runs"))
    cms, atlas = env_of(bundled["cms"]["containers"][0]), env_of(bundled["atlas"]["containers"][0])
    assert cms["CROSSFED_STORAGE"]["value"] == "s3://mlflow/runs"
    assert cms["AWS_ENDPOINT_URL"]["value"] == "http://demo-crossfed-minio:9000"
    assert cms["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "cms-runs", "key": "AWS_ACCESS_KEY_ID"}
    assert atlas["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "crossfed-minio", "key": "rootUser"}
    off = ray_groups(render(helm, "-f", TWO, "--set", "runStorage.enabled=false"))
    assert "CROSSFED_STORAGE" not in env_of(off["cms"]["containers"][0])
    # Ray pods share no disk: a local path is refused by the schema.
    done = run_helm(helm, "template", "demo", str(CHART), "-f", THREE, "--set", "runStorage.uri=/mnt/runs")
    assert done.returncode != 0 and "/runStorage/uri" in done.stderr


REQUIRED_CREDENTIALS = {
    "ray.auth.existingSecret": "Ray token authentication needs a token",
    "mlflow.auth.existingSecret": "MLflow authentication needs admin credentials and a session secret key",
    "mlflow.auth.jobUser.existingSecret": "Ray jobs log to MLflow as an ordinary user",
    "postgresql.auth.existingSecret": "the bundled PostgreSQL needs a password",
    "minio.auth.existingSecret": "the bundled MinIO needs credentials",
}


@pytest.mark.parametrize("missing", sorted(REQUIRED_CREDENTIALS))
def test_template_fails_clearly_without_credentials(helm, missing):
    done = run_helm(helm, "template", "demo", str(CHART), "-f", TWO, "--set", f"{missing}=")
    assert done.returncode != 0
    assert REQUIRED_CREDENTIALS[missing] in done.stderr


def test_mlflow_secret_key_has_no_default(helm):
    args = ["-f", TWO, "--set", "mlflow.auth.existingSecret=", "--set", "mlflow.auth.adminPassword=pw"]
    done = run_helm(helm, "template", "demo", str(CHART), *args)
    assert done.returncode != 0 and "flaskSecretKey" in done.stderr


def test_bundled_minio_needs_the_mlflow_server(helm):
    done = run_helm(helm, "template", "demo", str(CHART), "-f", TWO, "--set", "mlflow.enabled=false")
    assert done.returncode != 0 and "the bundled minio comes with the MLflow server" in done.stderr
    external = ["-f", TWO, "--set", "mlflow.enabled=false", "--set", "minio.enabled=false", "--set", "postgresql.enabled=false",
                "--set", "runStorage.uri=s3://runs/crossfed", "--set", "runStorage.existingSecret=runs"]
    env = env_of(ray_groups(render(helm, *external))["cms"]["containers"][0])
    assert env["CROSSFED_STORAGE"]["value"] == "s3://runs/crossfed" and "MLFLOW_TRACKING_URI" not in env
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "runs"


def test_external_database_needs_host_and_secret(helm):
    done = run_helm(helm, "template", "demo", str(CHART), "-f", THREE, "--set", "mlflow.externalDatabase.host=")
    assert done.returncode != 0 and "mlflow.externalDatabase.host" in done.stderr


def test_default_values_hold_no_credential():
    values = (CHART / "values.yaml").read_text()
    for match in re.finditer(r"^\s*((?!automount)\w*(?:password|token|Password|Token|rootUser|SecretKey))\s*:\s*(.*)$", values, re.M):
        assert match.group(2).strip() == '""', match.group(0)


def test_mlflow_is_pinned_alike_in_project_image_and_environment():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = [d for d in project["dependencies"] if d.startswith("mlflow")]
    pinned = re.fullmatch(r"mlflow==([0-9.]+)", pin).group(1)
    assert f"mlflow[auth]=={pinned}" in project["optional-dependencies"]["server"]
    assert version("mlflow") == pinned  # the tests run the version the image gets
    instructions = re.sub(r"^#.*$", "", (REPO_ROOT / "Dockerfile").read_text(), flags=re.M)
    (extras,) = re.findall(r'pip install [^\n]*"\.\[([a-z0-9,]+)\]"', instructions)
    assert {"generate", "server"} <= set(extras.split(","))  # the image's MLflow is the server extra's
    assert not re.search(r"mlflow\[|mlflow[=<>]", instructions)  # no second, unpinned mlflow


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
