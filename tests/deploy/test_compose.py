"""The compose files, as ``docker-compose config`` resolves them, agree with the code: settings
names, ports, volumes, addresses and commands of every service, in the GPU and CPU variants."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from jobs.settings import JobSettings
from scoring.settings import BackendSettings
from service.settings import GatewaySettings
from tests.deploy.deployment import (
    COMPOSE_GPU,
    COMPOSE_SECRETS,
    ENV_EXAMPLE,
    REPO,
    TFSERVING_NAME,
    compose_config,
    enabled,
    flags,
    image,
    mount_at,
    mount_holding,
    option,
    passed_through,
    ports,
    resolve_host,
    service_argv,
    service_env,
)
from training.__main__ import build_parser as build_training_parser
from worker.settings import WorkerSettings

pytestmark = pytest.mark.integration

# What each Python service builds from its environment (service/__main__.py builds
# GatewaySettings and JobSettings; worker.celery_app, which Flower loads too, WorkerSettings).
SETTINGS_OF = {
    "gateway": (GatewaySettings, JobSettings),
    "worker": (WorkerSettings,),
    "flower": (WorkerSettings,),
}
ALL_FIELDS = {f"NEWSCLF_{name.upper()}"
              for cls in (BackendSettings, GatewaySettings, JobSettings, WorkerSettings)
              for name in cls.model_fields}


def env_names(classes) -> set[str]:
    return {f"NEWSCLF_{name.upper()}" for cls in classes for name in cls.model_fields}


@pytest.fixture
def load_settings(monkeypatch):
    """``load_settings(cls, service)``: the settings object the container would build."""

    def load(cls, service: dict):
        for name in ALL_FIELDS:
            monkeypatch.delenv(name, raising=False)
        for name, value in service_env(service).items():
            monkeypatch.setenv(name, value)
        return cls()

    return load


def test_both_variants_resolve(gpu_config, cpu_config):
    expected = {"redis", "gateway", "worker"}
    assert expected <= set(enabled(gpu_config)) and expected <= set(enabled(cpu_config))
    assert "tfserving" in enabled(gpu_config)
    assert "tfserving-cpu" in enabled(cpu_config) and "tfserving" not in enabled(cpu_config)


@pytest.mark.parametrize("name", sorted(SETTINGS_OF))
def test_environment_names_are_settings_fields(config, name):
    service = config["services"][name]
    names = set(service.get("environment") or {}) | set(service_env(service))
    unknown = {n for n in names if n.startswith("NEWSCLF_")} - env_names(SETTINGS_OF[name])
    assert not unknown, f"{name} sets {sorted(unknown)}, which no settings class it loads has"


@pytest.mark.parametrize("name", sorted(SETTINGS_OF))
def test_every_setting_reaches_the_container(config, name):
    """Each field is set by the image or compose, or passed through from .env."""
    service = config["services"][name]
    reachable = set(service_env(service)) | passed_through(service)
    missing = env_names(SETTINGS_OF[name]) - reachable
    assert not missing, f"{name}: {sorted(missing)} can be set neither in .env nor by compose"


@pytest.mark.parametrize("name", sorted(SETTINGS_OF))
def test_settings_load_from_the_container_environment(config, name, load_settings):
    service = config["services"][name]
    for cls in SETTINGS_OF[name]:
        load_settings(cls, service)


@pytest.mark.parametrize("name", ["gateway", "worker"])
def test_model_root_is_the_served_model_volume(config, name, load_settings):
    service = config["services"][name]
    settings = load_settings(BackendSettings, service)
    mount = mount_at(service, settings.model_root)
    assert mount is not None, f"{name}: model root {settings.model_root} is not a mount"
    assert mount.read_only, f"{name} only reads models; mount them read-only"
    tfserving = config["services"][resolve_host(config, TFSERVING_NAME)[0]]
    served = mount_holding(tfserving, flags(service_argv(tfserving))["model_config_file"])
    assert served is not None and mount.source == served.source, \
        f"{name} reads models from {mount.source}, TF Serving from {served and served.source}"


@pytest.mark.parametrize("name", ["gateway", "worker"])
def test_tfserving_addresses_reach_tfserving(config, name, load_settings):
    settings = load_settings(BackendSettings, config["services"][name])
    assert settings.backend_kind == "tfserving"
    for address in settings.tfserving_addresses:
        host, port = address.rsplit(":", 1)
        targets = resolve_host(config, host)
        assert len(targets) == 1, f"{address}: {host!r} resolves to {targets}"
        argv = service_argv(config["services"][targets[0]])
        assert int(port) == int(flags(argv)["port"]), f"{address}: TF Serving listens on {flags(argv)['port']}"


@pytest.mark.parametrize("name", sorted(SETTINGS_OF))
def test_redis_url_reaches_redis(config, name, load_settings):
    settings = load_settings(JobSettings, config["services"][name])
    url = urlsplit(settings.redis_url)
    assert resolve_host(config, url.hostname) == ["redis"]
    redis = config["services"]["redis"]
    listening = int(option(redis["command"], "--port")) if "--port" in redis["command"] else 6379
    assert (url.port or 6379) == listening
    assert {p.target for p in ports(redis)} == {listening}


def test_redis_keeps_jobs(config):
    redis = config["services"]["redis"]
    command = redis["command"]
    assert option(command, "--maxmemory-policy") == "noeviction"
    assert option(command, "--appendonly") == "yes"
    assert mount_at(redis, "/data") is not None and mount_at(redis, "/data").named_volume
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])


def test_gateway_ports_match_settings(config, load_settings):
    gateway = config["services"]["gateway"]
    settings = load_settings(GatewaySettings, gateway)
    assert settings.host == "0.0.0.0"
    assert {p.target for p in ports(gateway)} == {settings.grpc_port, settings.http_port}
    assert set(image("gateway").expose) == {settings.grpc_port, settings.http_port}
    assert service_argv(gateway) == ["python", "-m", "service", "serve"]
    assert importlib.util.find_spec("service.__main__") is not None


def seconds(duration: str) -> float:
    """A compose duration such as ``30s``, ``2m`` or ``1m30s``."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_gateway_may_finish_in_flight_requests(config, load_settings):
    """Docker kills after stop_grace_period; the gateway needs its drain period and then its
    shutdown grace before that."""
    gateway = config["services"]["gateway"]
    settings = load_settings(GatewaySettings, gateway)
    assert seconds(str(gateway.get("stop_grace_period", "10s"))) > settings.shutdown_drain_s + settings.shutdown_grace_s


def test_jobs_paths_are_shared_volumes(config, load_settings):
    """A job validated by the gateway reads, on every worker, the same files, and every worker
    writes results and scratch chunks where the others (and the gateway) find them."""
    gateway, worker = config["services"]["gateway"], config["services"]["worker"]
    for name, service in (("gateway", gateway), ("worker", worker)):
        settings = load_settings(JobSettings, service)
        assert settings.allowed_roots, f"{name}: no allowed input roots"
        for root in settings.allowed_roots:
            assert mount_at(service, root) is not None and mount_at(service, root).read_only
    settings = load_settings(WorkerSettings, worker)
    for path in (settings.results_dir, settings.scratch_dir):
        mount = mount_at(worker, path)
        assert mount is not None and not mount.read_only, f"worker cannot write {path}"
        assert mount.named_volume or Path(mount.source).is_absolute()
    gateway_results = mount_at(gateway, load_settings(JobSettings, gateway).results_dir)
    assert gateway_results is not None and gateway_results.source == mount_at(worker, settings.results_dir).source
    gateway_roots = {mount_at(gateway, r).source for r in load_settings(JobSettings, gateway).allowed_roots}
    assert gateway_roots == {mount_at(worker, r).source for r in settings.allowed_roots}


def test_worker_scales(config):
    worker = config["services"]["worker"]
    assert "container_name" not in worker, "`--scale worker=N` needs compose to name the containers"
    assert not ports(worker), "scaled workers cannot share fixed host ports"
    argv = service_argv(worker)
    assert argv[:4] == ["celery", "-A", "worker.celery_app", "worker"] and "-E" in argv
    assert importlib.util.find_spec("worker.celery_app") is not None
    assert not worker.get("profiles")


def test_flower_is_optional(config):
    flower = config["services"]["flower"]
    assert flower.get("profiles") == ["monitoring"]
    assert service_argv(flower)[:4] == ["celery", "-A", "worker.celery_app", "flower"]
    port = int(flags(service_argv(flower))["port"])
    assert {p.target for p in ports(flower)} == {port} and image("flower").expose == [port]


def test_host_ports_do_not_clash(config):
    published = [(p.host_ip, p.published) for svc in enabled(config).values() for p in ports(svc)]
    assert len(published) == len(set(published)), published


def training_services(config) -> dict[str, dict]:
    return {n: s for n, s in config["services"].items() if s.get("build", {}).get("target") == "training"}


def test_training_is_a_one_off_writing_the_served_model_root(config):
    trainings = training_services(config)
    assert trainings, "no training service"
    tfserving = config["services"][resolve_host(config, TFSERVING_NAME)[0]]
    config_file = flags(service_argv(tfserving))["model_config_file"]
    served = mount_holding(tfserving, config_file)
    for name, training in trainings.items():
        assert training.get("profiles") == ["training"], f"{name} must not start with `up`"
        argv = service_argv(training)
        assert argv[:4] == ["python", "-m", "training", "train"], argv
        root = option(argv, "--model-root")
        mount = mount_at(training, root)
        assert mount is not None and not mount.read_only, f"{name} cannot write {root}"
        assert mount.source == served.source, f"{name} writes {mount.source}; TF Serving reads {served.source}"
        # models.config lands in the model root and names base paths as TF Serving sees them.
        assert str(Path(root) / "models.config") == str(Path(served.target) / Path(config_file).name)
        assert option(argv, "--serving-base-path") == served.target
        corpus = mount_holding(training, option(argv, "--corpus"))
        assert corpus is not None and corpus.read_only
        logs = mount_at(training, option(argv, "--log-dir"))
        assert logs is not None and not logs.read_only, "TensorBoard logs would vanish with the container"


def test_training_command_is_accepted_by_the_cli(config):
    """The container's command parses with the real training CLI, as the values it names."""
    for training in training_services(config).values():
        argv = service_argv(training)
        args = build_training_parser().parse_args(argv[3:])
        assert args.command == "train" and args.variant == "all"
        assert str(args.model_root) == option(argv, "--model-root")
        assert args.serving_base_path == option(argv, "--serving-base-path")


def test_env_example_as_is_changes_nothing(gpu_config, tmp_path):
    """Copying deploy/.env.example to .env is safe: every line in it is commented out."""
    assert compose_config(COMPOSE_GPU, tmp_path, ENV_EXAMPLE.read_text()) == gpu_config


def test_dotenv_settings_reach_the_containers(tmp_path, load_settings):
    """A tuning value in .env arrives in the container; an empty TF Serving address list
    switches to the embedded backend."""
    config = compose_config(COMPOSE_GPU, tmp_path,
                            "NEWSCLF_BATCH_MAX_SIZE=32\nNEWSCLF_CHUNK_SIZE=50\nNEWSCLF_TFSERVING_ADDRESSES=\n")
    gateway = load_settings(GatewaySettings, config["services"]["gateway"])
    assert gateway.batch_max_size == 32 and gateway.backend_kind == "embedded"
    worker = load_settings(WorkerSettings, config["services"]["worker"])
    assert worker.chunk_size == 50 and worker.backend_kind == "embedded"


def test_every_service_rotates_logs_and_has_limits(config):
    for name, service in config["services"].items():
        logging = service.get("logging") or {}
        assert logging.get("driver") == "json-file", f"{name}: no log rotation"
        assert {"max-size", "max-file"} <= set(logging.get("options", {})), f"{name}: {logging}"
        assert service.get("mem_limit") and float(service.get("cpus", 0)) > 0, f"{name}: no memory/CPU limit"


def test_tfserving_leaves_gpu_memory_for_training(gpu_config):
    tfserving = gpu_config["services"]["tfserving"]
    fraction = float(flags(service_argv(tfserving))["per_process_gpu_memory_fraction"])
    assert 0 < fraction < 1, "TF Serving would take nearly all GPU memory"
    assert tfserving["mem_limit"]


def test_gateway_image_matches_its_backend(tmp_path, load_settings):
    """By default the slim image (no TensorFlow) in front of TF Serving; the embedded backend
    gets the image that carries TensorFlow."""
    default = compose_config(COMPOSE_GPU, tmp_path)["services"]["gateway"]
    assert default["build"]["target"] == "gateway" and default["image"].split("/")[-1].startswith("gateway:")
    assert load_settings(BackendSettings, default).backend_kind == "tfserving"
    embedded = compose_config(COMPOSE_GPU, tmp_path,
                              "GATEWAY_TARGET=gateway-embedded\nNEWSCLF_TFSERVING_ADDRESSES=\n")["services"]["gateway"]
    assert embedded["build"]["target"] == "gateway-embedded"
    assert load_settings(BackendSettings, embedded).backend_kind == "embedded"


@pytest.mark.parametrize("files", [COMPOSE_SECRETS, ("docker-compose.yml", "docker-compose.cpu.yml",
                                                      "deploy/compose.secrets.yml")])
def test_secrets_override_resolves(tmp_path, files):
    config = compose_config(files, tmp_path)
    declared = set(config["secrets"])
    for name in ("redis", "gateway", "worker", "flower"):
        used = {s["source"] for s in config["services"][name]["secrets"]}
        assert used <= declared
        for variable, value in (config["services"][name].get("environment") or {}).items():
            if variable.endswith("_FILE") and name != "redis":
                assert Path(value).name in used and variable.removesuffix("_FILE") in ALL_FIELDS


def test_monitoring_profile(config):
    for name in ("prometheus", "grafana", "flower"):
        assert config["services"][name].get("profiles") == ["monitoring"], name


def test_dotenv_and_secrets_are_not_committed():
    for path in (".env", "secrets/api_keys", "newsclf-secrets.yaml"):
        result = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, timeout=30)
        assert result.returncode == 0, f"{path} is not git-ignored"
