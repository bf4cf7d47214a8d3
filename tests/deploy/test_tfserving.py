"""TF Serving as deployed: the image matches the training TensorFlow, the GPU is reserved only in
the GPU variant, the flags point at files that exist and parse as TF Serving's protos, the
models.config that training writes names paths TF Serving sees, and the health check works."""

from __future__ import annotations

import http.server
import re
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
import tomllib
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from packaging.requirements import Requirement
from tensorflow_serving.config import model_server_config_pb2

from jobs.settings import JobSettings
from service.settings import GatewaySettings
from tests.deploy.deployment import (
    REPO,
    TFSERVING_NAME,
    enabled,
    flags,
    gpu_devices,
    image,
    mount_holding,
    ports,
    resolve_host,
    service_argv,
)
from training.layout import MODELS_CONFIG, ModelRoot

pytestmark = pytest.mark.integration

IMAGE = re.compile(r"^tensorflow/serving:(\d+\.\d+\.\d+)(-gpu)?$")
# Flags of tensorflow_model_server (tensorflow_serving/model_servers/main.cc); it refuses to
# start on a flag it does not know, so a misspelt one would only show on the operator's machine.
MODEL_SERVER_FLAGS = {
    "port", "grpc_socket_path", "rest_api_port", "rest_api_num_threads", "rest_api_timeout_in_ms",
    "enable_batching", "allow_version_labels_for_unavailable_models", "batching_parameters_file",
    "enable_per_model_batching_parameters", "model_config_file", "model_config_file_poll_wait_seconds",
    "model_name", "model_base_path", "num_load_threads", "num_unload_threads", "max_num_load_retries",
    "load_retry_interval_micros", "file_system_poll_wait_seconds", "flush_filesystem_caches",
    "tensorflow_session_parallelism", "tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism",
    "ssl_config_file", "platform_config_file", "per_process_gpu_memory_fraction", "saved_model_tags",
    "grpc_channel_arguments", "grpc_max_threads", "enable_model_warmup", "num_request_iterations_for_warmup",
    "monitoring_config_file",
}


def tfserving(config: dict) -> dict:
    names = resolve_host(config, TFSERVING_NAME)
    assert len(names) == 1, f"`{TFSERVING_NAME}` must name exactly one started service, got {names}"
    return config["services"][names[0]]


def host_file(service: dict, container_path: str) -> Path:
    """The repository file a bind mount puts at ``container_path``."""
    mount = mount_holding(service, container_path)
    assert mount is not None and not mount.named_volume, f"{container_path} is not bind-mounted"
    return Path(mount.source) / Path(container_path).relative_to(mount.target)


def pinned_tensorflow() -> str:
    for line in (REPO / "deploy" / "constraints.txt").read_text().splitlines():
        if line.startswith("tensorflow=="):
            return line.split("==", 1)[1]
    raise AssertionError("deploy/constraints.txt does not pin tensorflow")


def test_image_matches_the_training_tensorflow(gpu_config, cpu_config):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    spec = next(Requirement(r) for r in project["optional-dependencies"]["embedded"]
                if Requirement(r).name == "tensorflow")
    for config, gpu in ((gpu_config, True), (cpu_config, False)):
        match = IMAGE.match(tfserving(config)["image"])
        assert match, f"not an official TF Serving image with an exact version: {tfserving(config)['image']}"
        version, suffix = match.groups()
        assert version in spec.specifier, f"TF Serving {version} vs pyproject's {spec}"
        assert version == pinned_tensorflow(), "TF Serving and the images' TensorFlow differ"
        assert bool(suffix) == gpu


def test_gpu_reserved_only_in_the_gpu_variant(gpu_config, cpu_config):
    devices = gpu_devices(tfserving(gpu_config))
    assert devices and all(d["driver"] == "nvidia" for d in devices)
    training = gpu_config["services"]["training"]
    assert gpu_devices(training), "training should get the GPU in the GPU variant"
    for name, service in enabled(cpu_config).items():
        assert not gpu_devices(service), f"CPU variant still reserves a GPU for {name}"
    assert not gpu_devices(cpu_config["services"]["training-cpu"])


def test_flags(config):
    service = tfserving(config)
    argv = service_argv(service)
    assert argv[0] == "/usr/bin/tensorflow_model_server"
    opts = flags(argv)
    assert len(opts) == len(argv) - 1, f"every argument is a --name=value flag: {argv}"
    assert set(opts) <= MODEL_SERVER_FLAGS, f"unknown flags {sorted(set(opts) - MODEL_SERVER_FLAGS)}"
    assert opts["enable_batching"] == "true" and opts["enable_model_warmup"] == "true"
    assert int(opts["model_config_file_poll_wait_seconds"]) > 0
    assert int(opts["file_system_poll_wait_seconds"]) > 0
    assert opts["allow_version_labels_for_unavailable_models"] == "true"
    assert 0.0 <= float(opts["per_process_gpu_memory_fraction"]) <= 1.0
    assert {p.target for p in ports(service)} == {int(opts["port"]), int(opts["rest_api_port"])}
    models = mount_holding(service, opts["model_config_file"])
    assert models is not None and models.read_only and Path(opts["model_config_file"]).name == MODELS_CONFIG
    for name in ("batching_parameters_file", "monitoring_config_file"):
        assert host_file(service, opts[name]).is_file(), f"--{name}={opts[name]} is not in the repository"


def test_runs_as_the_model_writer(config):
    """Training writes versions as the image's uid; TF Serving must be able to read them."""
    assert tfserving(config)["user"] == image("training").user


def test_models_config_written_by_training_matches_the_mount(config, tiny_model_root, tmp_path):
    service = tfserving(config)
    opts = flags(service_argv(service))
    served = mount_holding(service, opts["model_config_file"])
    parsed = text_format.Parse((tiny_model_root / MODELS_CONFIG).read_text(),
                               model_server_config_pb2.ModelServerConfig())
    configs = parsed.model_config_list.config
    assert {c.name for c in configs} == set(ModelRoot(tiny_model_root).models())
    for entry in configs:
        assert entry.base_path == f"{served.target}/{entry.name}", entry
        assert entry.model_platform == "tensorflow"
    # With a canary label too, the file still parses and keeps the base paths.
    copy = ModelRoot(tmp_path / "root")
    (copy.path / "gru" / "1").mkdir(parents=True)
    (copy.path / "gru" / "1" / "saved_model.pb").write_bytes(b"")
    (copy.path / "gru" / "2").mkdir()
    (copy.path / "gru" / "2" / "saved_model.pb").write_bytes(b"")
    copy.set_version_label("gru", "stable", 1, serving_base=served.target)
    copy.set_version_label("gru", "canary", 2, serving_base=served.target)
    labelled = text_format.Parse((copy.path / MODELS_CONFIG).read_text(),
                                 model_server_config_pb2.ModelServerConfig()).model_config_list.config[0]
    assert labelled.base_path == f"{served.target}/gru"
    assert dict(labelled.version_labels) == {"stable": 1, "canary": 2}
    assert sorted(labelled.model_version_policy.specific.versions) == [1, 2]


# TF Serving's own messages for the two files (tensorflow_serving/config/monitoring_config.proto
# and servables/tensorflow/session_bundle_config.proto), which tensorflow-serving-api does not
# ship; parsing with them rejects misspelt or mistyped fields as TF Serving would.
def _tfserving_config_messages() -> dict[str, type]:
    proto = descriptor_pb2.FileDescriptorProto(name="newsclf_deploy_tfserving_config.proto",
                                               package="tensorflow.serving", syntax="proto3",
                                               dependency=["google/protobuf/wrappers.proto"])
    F = descriptor_pb2.FieldDescriptorProto
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                         type_name=".tensorflow.serving.PrometheusConfig")
    batching = proto.message_type.add(name="BatchingParameters")
    for number, name, wrapper in ((1, "max_batch_size", "Int64Value"), (2, "batch_timeout_micros", "Int64Value"),
                                  (3, "max_enqueued_batches", "Int64Value"), (4, "num_batch_threads", "Int64Value"),
                                  (5, "thread_pool_name", "StringValue")):
        batching.field.add(name=name, number=number, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                           type_name=f".google.protobuf.{wrapper}")
    batching.field.add(name="allowed_batch_sizes", number=6, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
    batching.field.add(name="pad_variable_length_inputs", number=7, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
            for name in ("MonitoringConfig", "BatchingParameters")}


MESSAGES = _tfserving_config_messages()


def test_batching_parameters(gpu_config):
    service = tfserving(gpu_config)
    path = host_file(service, flags(service_argv(service))["batching_parameters_file"])
    params = text_format.Parse(path.read_text(), MESSAGES["BatchingParameters"]())
    # The largest batch a gateway or worker sends in one Predict call must fit one batch, so no
    # call is split (or, where splitting is off, refused).
    gateway, jobs = GatewaySettings(), JobSettings()
    largest_call = max(gateway.max_documents, gateway.batch_max_size, jobs.batch_size)
    assert params.max_batch_size.value >= largest_call
    assert 0 < params.batch_timeout_micros.value < gateway.request_timeout_s * 1e6
    assert params.max_enqueued_batches.value > 0 and params.num_batch_threads.value > 0
    if params.allowed_batch_sizes:
        assert list(params.allowed_batch_sizes) == sorted(params.allowed_batch_sizes)
        assert params.allowed_batch_sizes[-1] == params.max_batch_size.value


def monitoring_path(config: dict) -> str:
    service = tfserving(config)
    path = host_file(service, flags(service_argv(service))["monitoring_config_file"])
    monitoring = text_format.Parse(path.read_text(), MESSAGES["MonitoringConfig"]())
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path.startswith("/")
    return monitoring.prometheus_config.path


def test_monitoring_exposes_prometheus(gpu_config):
    assert monitoring_path(gpu_config) == "/monitoring/prometheus/metrics"


def test_malformed_batching_file_is_rejected():
    """The parse above is a real check: a typo fails as it would in TF Serving."""
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_size { value: 8 }\nmax_batch_sise { value: 8 }\n",
                          MESSAGES["BatchingParameters"]())


class _Metrics(http.server.BaseHTTPRequestHandler):
    ok_path = ""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == self.ok_path else 404)
        self.end_headers()
        self.wfile.write(b"# metrics\n")

    def log_message(self, *args):
        pass


@contextmanager
def metrics_server(path: str):
    handler = type("Handler", (_Metrics,), {"ok_path": path})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def run_healthcheck(test: list[str], rest_port: str, port: int) -> int:
    assert test[0] == "CMD" and test[1] == "bash", "the TF Serving image has bash but no curl"
    script = test[-1].replace(f"/127.0.0.1/{rest_port}", f"/127.0.0.1/{port}")
    return subprocess.run(["bash", "-c", script], timeout=20).returncode


def test_healthcheck_reads_the_rest_port(config):
    """The check the container runs, run here by bash against an HTTP server."""
    service = tfserving(config)
    test = service["healthcheck"]["test"]
    rest_port = flags(service_argv(service))["rest_api_port"]
    assert f"/dev/tcp/127.0.0.1/{rest_port}" in test[-1]
    path = monitoring_path(config)
    assert f"GET {path} " in test[-1]
    with metrics_server(path) as port:
        assert run_healthcheck(test, rest_port, port) == 0
    with metrics_server("/elsewhere") as port:
        assert run_healthcheck(test, rest_port, port) != 0
    assert run_healthcheck(test, rest_port, port) != 0, "a closed port must be unhealthy"
