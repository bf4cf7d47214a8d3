"""Graceful shutdown, TLS, the `python -m service serve` process with SIGTERM, and the client CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from service.client import main as client_main
from service.protos import classifier_pb2 as pb
from service.protos import classifier_pb2_grpc as pb_grpc
from tests.support.model_roots import SAMPLE_TEXTS
from tests.support.processes import HOST, REPO, free_port, service_env, wait_for

pytestmark = pytest.mark.integration

TEXT = SAMPLE_TEXTS[0]


def test_graceful_shutdown_finishes_in_flight_requests(start_gateway, make_clients, slow_backend):
    gateway = start_gateway(backend=slow_backend)
    c = make_clients(gateway)
    outcome: dict = {}

    def grpc_call():
        try:
            outcome["grpc"] = c.classify_grpc([TEXT] * 2, model="gru")
        except grpc.RpcError as exc:
            outcome["grpc"] = exc

    def http_call():
        outcome["http"] = c.classify_http([TEXT], model="gru")

    callers = [threading.Thread(target=grpc_call), threading.Thread(target=http_call)]
    for t in callers:
        t.start()
    watch = health_pb2_grpc.HealthStub(c.channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    wait_for(lambda: gateway.core.batcher.queued_documents == 3, 10, "both requests queued", step=0.01)
    stopper = threading.Thread(target=gateway.stop, kwargs={"grace_s": 10.0})
    stopper.start()
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING  # watchers learn first
    watch.cancel()
    for t in callers:
        t.join(15)
    stopper.join(15)
    assert not stopper.is_alive()
    assert isinstance(outcome["grpc"], pb.ClassifyResponse) and len(outcome["grpc"].results) == 2
    assert outcome["http"].status_code == 200 and len(outcome["http"].json()["results"]) == 1
    with pytest.raises(grpc.RpcError) as info:
        c.classify_grpc([TEXT], timeout=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{HOST}:{gateway.http_port}/healthz", timeout=2)


def test_tls_on_both_transports(start_gateway, tls_files):
    cert, key = tls_files
    gateway = start_gateway(tls_cert=cert, tls_key=key)
    credentials = grpc.ssl_channel_credentials(cert.read_bytes())
    with grpc.secure_channel(f"localhost:{gateway.grpc_port}", credentials) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        answer = stub.Classify(pb.ClassifyRequest(model="gru", documents=[pb.Document(text=TEXT)]), timeout=10)
        assert answer.model == "gru"
    with grpc.insecure_channel(f"{HOST}:{gateway.grpc_port}") as plain:  # plaintext is refused
        with pytest.raises(grpc.RpcError):
            pb_grpc.ClassifierStub(plain).ListModels(pb.ListModelsRequest(), timeout=2)
    response = httpx.post(f"https://localhost:{gateway.http_port}/v1/classify", verify=str(cert), timeout=10,
                          json={"model": "gru", "documents": [{"text": TEXT}]})
    assert response.status_code == 200 and response.json()["model"] == "gru"
    code = client_main(["classify", TEXT, "--transport", "http", "--tls", "--ca-cert", str(cert),
                        "--address", f"localhost:{gateway.http_port}"])
    assert code == 0


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_client_cli_in_process(gateway, capsys, tmp_path, monkeypatch, transport):
    address = f"{HOST}:{gateway.grpc_port if transport == 'grpc' else gateway.http_port}"
    common = ["--transport", transport, "--address", address]
    assert client_main(["classify", TEXT, SAMPLE_TEXTS[1], "--model", "rnn", "--top-k", "2", "--json", *common]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["model"] == "rnn" and [r["id"] for r in answer["results"]] == ["1", "2"]
    assert all(len(r["topics"]) == 2 for r in answer["results"])

    source = tmp_path / "news.txt"
    source.write_text("\n".join(SAMPLE_TEXTS) + "\n\n", encoding="utf-8")
    assert client_main(["classify", "--file", str(source), "--lines", "--version", "1", *common]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "model gru version 1" and len(lines) == 1 + len(SAMPLE_TEXTS)

    monkeypatch.setattr("sys.stdin", _Stdin(TEXT))
    assert client_main(["classify", "--json", *common]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 1

    assert client_main(["models", *common]) == 0
    assert {line.split(":")[0] for line in capsys.readouterr().out.splitlines()} == {"ensemble", "gru", "rnn", "sentence"}

    assert client_main(["classify", TEXT, "--model", "nosuch", *common]) == 1
    assert "error: NOT_FOUND" in capsys.readouterr().err
    assert client_main(["classify", "   ", *common]) == 1
    assert "error: INVALID_ARGUMENT" in capsys.readouterr().err


class _Stdin:
    def __init__(self, text: str):
        self.text = text

    def isatty(self) -> bool:
        return False

    def read(self) -> str:
        return self.text


def test_client_reports_an_unreachable_gateway(capsys):
    port = free_port()
    for transport in ("grpc", "http"):
        assert client_main(["models", "--transport", transport, "--address", f"{HOST}:{port}", "--timeout", "2"]) == 1
        assert "error: UNAVAILABLE" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_process_with_cli_and_sigterm(tiny_model_root, tmp_path):
    """`python -m service serve` from the environment (job API mounted), the CLI, and SIGTERM."""
    grpc_port, http_port = free_port(), free_port()
    env = service_env(model_root=tiny_model_root, host=HOST, grpc_port=grpc_port, http_port=http_port,
                      api_keys="cli-key", shutdown_grace_s=5)
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "service", "serve"], cwd=REPO, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _ready(http_port), 120, "the gateway process to become ready")
        for transport, port in (("grpc", grpc_port), ("http", http_port)):
            cli = subprocess.run([sys.executable, "-m", "service.client", "classify", TEXT, "--model", "gru",
                                  "--transport", transport, "--address", f"{HOST}:{port}", "--api-key", "cli-key"],
                                 cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
            assert cli.returncode == 0, cli.stderr
            assert cli.stdout.startswith("model gru version 1") and cli.stdout.count("[1]") == 1
        assert "/v1/jobs" in httpx.get(f"http://{HOST}:{http_port}/openapi.json", timeout=5).json()["paths"]
        with grpc.insecure_channel(f"{HOST}:{grpc_port}") as channel:
            services = ProtoReflectionDescriptorDatabase(channel).get_services()
        assert {"newsclf.v1.Classifier", "newsclf.v1.Jobs"} <= set(services)
        denied = subprocess.run([sys.executable, "-m", "service.client", "models", "--address", f"{HOST}:{grpc_port}"],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert denied.returncode == 1 and "UNAUTHENTICATED" in denied.stderr
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()
    assert "gateway stopped" in (tmp_path / "serve.log").read_text()


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://{HOST}:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
