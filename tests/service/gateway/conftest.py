"""Gateway fixtures: the real embedded backend over the tiny models, gateways on 127.0.0.1:0.

Needs the generated gRPC code (``scripts/setup.sh`` runs ``scripts/build_protos.py``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import httpx
import pytest

from jobs.manager import JobManager
from jobs.settings import JobSettings
from scoring.backends.embedded import EmbeddedBackend
from scoring.backends.tfserving import TFServingBackend
from scoring.settings import BackendSettings
from service.gateway import Gateway
from service.protos import classifier_pb2 as pb
from service.protos import classifier_pb2_grpc as pb_grpc
from service.settings import GatewaySettings
from tests.support.prediction_server import PredictionServer
from tests.support.processes import HOST, RedisServer, wait_for

SLOW_CALL_S = 1.0


def start_embedded(root: Path, poll_s: float = 0.5) -> EmbeddedBackend:
    backend = EmbeddedBackend(BackendSettings(model_root=root, model_poll_interval_s=poll_s))
    wait_for(backend.ready, 120, "the backend's models", step=0.05)
    return backend


@pytest.fixture(scope="session")
def embedded_backend(tiny_model_root):
    """One embedded backend over the tiny models for the whole session (loading costs seconds)."""
    backend = start_embedded(tiny_model_root)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def slow_server(tiny_model_root):
    """A PredictionService double that sleeps ``latency_s`` (``SLOW_CALL_S`` unless a test changes it)."""
    server = PredictionServer(tiny_model_root, latency_s=SLOW_CALL_S).start()
    yield server
    server.stop(grace=0)


@pytest.fixture(scope="session")
def slow_backend(slow_server, tiny_model_root):
    """The TF Serving backend over ``slow_server``: requests stay in flight long enough to
    overload, time out, batch or shut down around them."""
    backend = TFServingBackend(BackendSettings(tfserving_addresses=[slow_server.address], model_root=tiny_model_root,
                                               tfserving_timeout_s=10.0))
    wait_for(backend.ready, 120, "the backend's models", step=0.05)
    yield backend
    backend.close()


@pytest.fixture
def start_gateway(embedded_backend):
    """Factory: ``start_gateway(backend=None, job_manager=None, **settings)`` -> a started Gateway on
    free ports."""
    gateways: list[Gateway] = []

    def start(backend=None, job_manager=None, **overrides) -> Gateway:
        values = dict(model_poll_interval_s=0.2, shutdown_grace_s=5.0, shutdown_drain_s=0.0, grpc_workers=16)
        values.update(overrides)
        settings = GatewaySettings(**values)
        gateway = Gateway(backend or embedded_backend, settings, job_manager, host=HOST, grpc_port=0, http_port=0)
        gateways.append(gateway)
        return gateway

    yield start
    for gateway in gateways:
        gateway.stop(grace_s=1.0)


@pytest.fixture
def gateway(start_gateway) -> Gateway:
    return start_gateway()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class Clients:
    """A gRPC stub and an HTTP client for one gateway."""

    def __init__(self, gateway: Gateway, api_key: str | None = None):
        self.gateway = gateway
        self.channel = grpc.insecure_channel(f"{HOST}:{gateway.grpc_port}")
        self.stub = pb_grpc.ClassifierStub(self.channel)
        self.metadata = (("x-api-key", api_key),) if api_key else ()
        self.http = httpx.Client(base_url=f"http://{HOST}:{gateway.http_port}", timeout=30.0,
                                 headers={"X-API-Key": api_key} if api_key else {})

    def classify_grpc(self, texts, model="gru", timeout=30.0, **fields) -> pb.ClassifyResponse:
        request = pb.ClassifyRequest(model=model, documents=[pb.Document(text=t, id=f"d{i}") for i, t in enumerate(texts)],
                                     **fields)
        return self.stub.Classify(request, timeout=timeout, metadata=self.metadata)

    def classify_http(self, texts, model="gru", **fields) -> httpx.Response:
        body = {"model": model, "documents": [{"text": t, "id": f"d{i}"} for i, t in enumerate(texts)], **fields}
        return self.http.post("/v1/classify", json=body)

    def close(self) -> None:
        self.channel.close()
        self.http.close()


@pytest.fixture
def clients(gateway):
    c = Clients(gateway)
    yield c
    c.close()


@pytest.fixture
def make_clients():
    made: list[Clients] = []

    def make(gateway: Gateway, api_key: str | None = None) -> Clients:
        made.append(Clients(gateway, api_key))
        return made[-1]

    yield make
    for c in made:
        c.close()


@pytest.fixture(scope="module")
def job_store(tmp_path_factory):
    """A private redis-server and the folders of a job API: inputs under ``data`` (the allowed root)."""
    root = tmp_path_factory.mktemp("jobs")
    for name in ("data", "results", "scratch"):
        (root / name).mkdir()
    with RedisServer(root) as redis_server:
        yield redis_server, root


@pytest.fixture
def job_manager(job_store):
    """A JobManager on the private Redis; no worker runs, so submitted jobs stay queued."""
    redis_server, root = job_store
    manager = JobManager(JobSettings(redis_url=redis_server.url + "/0", allowed_roots=[str(root / "data")],
                                     results_dir=root / "results", scratch_dir=root / "scratch",
                                     default_model="gru"))
    yield manager
    manager.close()
