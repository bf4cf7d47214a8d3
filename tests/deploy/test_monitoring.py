"""deploy/monitoring: Prometheus' config and alert rules pass ``promtool``; every metric a rule or
the Grafana dashboard names exists in a real ``/metrics`` scrape of a gateway whose jobs a real
Celery worker scored; and the compose `monitoring` profile mounts and reaches what they name."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from jobs.manager import JobManager
from scoring.backends.embedded import EmbeddedBackend
from scoring.settings import BackendSettings
from service.gateway import Gateway
from service.settings import GatewaySettings
from tests.deploy.deployment import REPO, mount_at, ports
from tests.support.inputs import NEWS, write_jsonl
from tests.support.processes import HOST, CeleryWorker, RedisServer, wait_for
from tests.worker.helpers import settings_of, wait_finished, worker_env

MONITORING = REPO / "deploy" / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
RULES = MONITORING / "rules.yml"
DASHBOARDS = MONITORING / "grafana" / "dashboards"
PROVISIONING = MONITORING / "grafana" / "provisioning"

# TF Serving's metrics cannot be scraped here (its binary is not installable on this machine).
# These are the names its Prometheus exporter gives the metrics the dashboard uses:
# tensorflow_serving/servables/tensorflow/util.cc defines /tensorflow/serving/request_count
# and /tensorflow/serving/request_latency (a histogram), and
# tensorflow_serving/util/prometheus_exporter.cc turns '/' into ':' and adds _bucket/_sum/_count.
TFSERVING_METRICS = {":tensorflow:serving:request_count", ":tensorflow:serving:request_latency_bucket",
                     ":tensorflow:serving:request_latency_sum", ":tensorflow:serving:request_latency_count"}
PROMETHEUS_OWN = {"up"}
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                "bool", "offset", "inf", "nan"}


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (scripts/setup.sh installs Debian's prometheus package)")
    return binary


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, label
    names (in braces or by/without lists) or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if not call and name.lower() not in PROMQL_WORDS:
            names.add(name)
    return names


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboards() -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))]


def dashboard_expressions() -> list[str]:
    return [target["expr"] for board in dashboards() for panel in board["panels"]
            for target in panel.get("targets", [])]


def test_metric_names_parser():
    expr = ('histogram_quantile(0.99, sum by (le, model) (rate(newsclf_x_bucket{status=~"A|B"}[5m]))) > 0.25 '
            'and max(:tensorflow:serving:request_count) / 1e6 > on(instance) up')
    assert metric_names(expr) == {"newsclf_x_bucket", ":tensorflow:serving:request_count", "up"}


@pytest.mark.integration
def test_prometheus_config_passes_promtool():
    result = subprocess.run([promtool(), "check", "config", str(PROMETHEUS_CONFIG)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules found" in result.stdout, "the config must load the alert rules"


@pytest.mark.integration
def test_alert_rules_pass_promtool(tmp_path):
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "rules.yml"
    broken.write_text(RULES.read_text().replace("> 0.05", "> > 0.05", 1))
    result = subprocess.run([promtool(), "check", "rules", str(broken)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, "promtool must catch a broken expression"


def test_alerts_cover_the_operating_risks():
    names = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    assert {"NewsclfGatewayDown", "NewsclfErrorRatioHigh", "NewsclfLatencyP99OverBudget", "NewsclfJobsStuck",
            "NewsclfQueueGrowing"} <= names


def test_dashboard_shows_what_an_operator_needs():
    exprs = " ".join(dashboard_expressions())
    for needed in ("newsclf_requests_total", "newsclf_request_latency_seconds_bucket", "newsclf_batch_documents",
                   "newsclf_queued_documents", "newsclf_job_queue_length", "newsclf_abstained_documents_total",
                   'newsclf_jobs{state=~"queued|running|failed"}', "newsclf_job_documents_total",
                   ":tensorflow:serving:request_latency_bucket"):
        assert needed in exprs, f"the dashboard shows no {needed}"
    for quantile in ("0.5", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le, model) (rate(newsclf_request_latency" in exprs


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus(gpu_config):
    grafana = gpu_config["services"]["grafana"]
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "newsclf.yml").read_text())["providers"][0]
    mount = mount_at(grafana, provider["options"]["path"])
    assert mount is not None and Path(mount.source) == DASHBOARDS
    assert Path(mount_at(grafana, "/etc/grafana/provisioning").source) == PROVISIONING
    (source,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    for board in dashboards():
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]
    host, port = re.match(r"http://([^:/]+):(\d+)", source["url"]).groups()
    assert host in gpu_config["services"]
    assert {p.target for p in ports(gpu_config["services"][host])} == {int(port)}


def test_scrape_targets_are_the_compose_services(gpu_config):
    """Each target names a service of the profile and the port and path it serves metrics on."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    prometheus = gpu_config["services"]["prometheus"]
    for name in ("prometheus.yml", "rules.yml"):
        assert Path(mount_at(prometheus, f"/etc/prometheus/{name}").source) == MONITORING / name
    targets = {job["job_name"]: (job["static_configs"][0]["targets"][0], job.get("metrics_path", "/metrics"))
               for job in config["scrape_configs"]}
    gateway, path = targets["newsclf-gateway"]
    assert gateway == f"gateway:{GatewaySettings().http_port}" and path == "/metrics"
    tfserving, path = targets["tfserving"]
    assert tfserving == "tfserving:8501"
    assert f'path: "{path}"' in (REPO / "deploy" / "tfserving" / "monitoring.config").read_text()
    flower, _ = targets["celery-flower"]
    assert flower.split(":")[0] in gpu_config["services"]


# -- every named metric in a real scrape ----------------------------------------------------------

@pytest.fixture(scope="module")
def scrape(tmp_path_factory, tiny_model_root, corpus_dir) -> set[str]:
    """Sample names of ``/metrics`` from a real gateway after one classify call and one job that
    a real Celery worker scored (redis-server and the worker are subprocesses)."""
    folder = tmp_path_factory.mktemp("monitoring")
    for name in ("data", "results", "scratch"):
        (folder / name).mkdir()
    with RedisServer(folder) as redis:
        env = worker_env(redis.url + "/0", tiny_model_root, folder, corpus_dir.resolve())
        worker = CeleryWorker(env, folder / "worker.log")
        backend = EmbeddedBackend(BackendSettings(model_root=tiny_model_root))
        manager = JobManager(settings_of(env))
        gateway = None
        try:
            wait_for(backend.ready, 120, "the gateway's models", step=0.05)
            settings = GatewaySettings(model_root=tiny_model_root, host=HOST, shutdown_grace_s=1, shutdown_drain_s=0)
            gateway = Gateway(backend, settings, manager, host=HOST, grpc_port=0, http_port=0)
            worker.wait_ready()
            with httpx.Client(base_url=f"http://{HOST}:{gateway.http_port}", timeout=30) as http:
                answer = http.post("/v1/classify", json={"model": "gru", "documents": [{"text": NEWS[0]}]})
                assert answer.status_code == 200, answer.text
                write_jsonl(folder / "data" / "news.jsonl")
                job = manager.submit({"input": str(folder / "data" / "news.jsonl"), "model": "gru"})
                assert wait_finished(manager, job.id).state == "done"
                body = http.get("/metrics").text
        finally:
            if gateway is not None:
                gateway.stop(1, 0)
            manager.close()
            backend.close()
            worker.stop()
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    documents = samples["newsclf_job_documents_total"][0].value
    assert documents == len(NEWS), f"the workers scored {len(NEWS)} documents; the gateway reports {documents}"
    jobs = {sample.labels["state"]: sample.value for sample in samples["newsclf_jobs"]}
    assert jobs == {"queued": 0, "running": 0, "done": 1, "failed": 0, "cancelled": 0}
    assert samples["newsclf_job_queue_length"][0].value == 0 and samples["newsclf_job_store_up"][0].value == 1
    return set(samples)


def test_job_figures_when_redis_is_down():
    """A scrape while Redis is unreachable answers quickly with newsclf_job_store_up 0."""
    import time

    from prometheus_client import CollectorRegistry, generate_latest

    from jobs.settings import JobSettings
    from jobs.store import JobStore
    from service.metrics import Metrics
    from tests.support.processes import free_port

    metrics = Metrics(CollectorRegistry())
    metrics.watch_jobs(JobStore(JobSettings(redis_url=f"redis://{HOST}:{free_port()}/0", redis_timeout_s=0.5)))
    started = time.monotonic()
    body = generate_latest(metrics.registry).decode()
    assert time.monotonic() - started < 5
    assert "newsclf_job_store_up 0.0" in body and "newsclf_jobs{" not in body


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_named_metric_exists_in_a_real_scrape(scrape, source):
    exprs = rule_expressions() if source == "rules" else dashboard_expressions()
    named = set().union(*(metric_names(e) for e in exprs))
    ours = {n for n in named if n.startswith("newsclf_")}
    assert ours, "no product metric named: the parser or the files are wrong"
    missing = ours - scrape
    assert not missing, f"{source} name metrics the gateway does not export: {sorted(missing)}"
    others = named - ours - TFSERVING_METRICS - PROMETHEUS_OWN
    assert not others, f"{source} name metrics of no known exporter: {sorted(others)}"
