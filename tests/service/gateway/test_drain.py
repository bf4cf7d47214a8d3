"""SIGTERM under steady traffic: readiness fails at once, both ports keep serving through the
drain period, then new calls are refused with UNAVAILABLE / 503 and the process exits 0. No call
started before the end of the drain sees CANCELLED or a reset connection."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.protos import classifier_pb2 as pb
from service.protos import classifier_pb2_grpc as pb_grpc
from tests.support.model_roots import SAMPLE_TEXTS
from tests.support.processes import HOST, REPO, free_port, service_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DRAIN_S = 2.0
CLIENTS_PER_TRANSPORT = 3
SERVED = {"OK", "200"}
REFUSED = {"UNAVAILABLE", "503"}


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://{HOST}:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _serving(port: int) -> bool:
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        try:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        except grpc.RpcError:
            return False
    return status.status == health_pb2.HealthCheckResponse.SERVING


class Traffic:
    """Client threads calling in a loop; every call is recorded as (start, transport, outcome)."""

    def __init__(self, grpc_port: int, http_port: int):
        self.grpc_port, self.http_port = grpc_port, http_port
        self.calls: list[tuple[float, str, str]] = []
        self.probes: list[tuple[float, str, str]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._grpc_loop) for _ in range(CLIENTS_PER_TRANSPORT)]
        self.threads += [threading.Thread(target=self._http_loop) for _ in range(CLIENTS_PER_TRANSPORT)]
        self.threads.append(threading.Thread(target=self._probe_loop))

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _grpc_loop(self) -> None:
        with grpc.insecure_channel(f"{HOST}:{self.grpc_port}") as channel:
            stub = pb_grpc.ClassifierStub(channel)
            request = pb.ClassifyRequest(model="gru", documents=[pb.Document(text=SAMPLE_TEXTS[0])])
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    stub.Classify(request, timeout=10)
                    outcome = "OK"
                except grpc.RpcError as exc:
                    outcome = exc.code().name
                self.calls.append((started, "grpc", outcome))
                time.sleep(0.01)

    def _http_loop(self) -> None:
        body = {"model": "gru", "documents": [{"text": SAMPLE_TEXTS[1]}]}
        with httpx.Client(base_url=f"http://{HOST}:{self.http_port}", timeout=10) as client:  # keep-alive
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    outcome = str(client.post("/v1/classify", json=body).status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                self.calls.append((started, "http", outcome))
                time.sleep(0.01)

    def _probe_loop(self) -> None:
        with grpc.insecure_channel(f"{HOST}:{self.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while not self.stop.is_set():
                now = time.monotonic()
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                    self.probes.append((now, "health", health_pb2.HealthCheckResponse.ServingStatus.Name(status)))
                except grpc.RpcError as exc:
                    self.probes.append((now, "health", exc.code().name))
                now = time.monotonic()
                try:
                    ready = httpx.get(f"http://{HOST}:{self.http_port}/readyz", timeout=2).status_code
                    self.probes.append((now, "readyz", str(ready)))
                except httpx.HTTPError as exc:
                    self.probes.append((now, "readyz", type(exc).__name__))
                time.sleep(0.05)


def test_sigterm_drains_then_refuses(tiny_model_root, tmp_path):
    root = tmp_path / "models"  # the one model the traffic uses: a quicker start
    shutil.copytree(tiny_model_root / "gru", root / "gru")
    grpc_port, http_port = free_port(), free_port()
    env = service_env(model_root=root, host=HOST, grpc_port=grpc_port, http_port=http_port,
                      shutdown_drain_s=DRAIN_S, shutdown_grace_s=5)
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "service", "serve", "--no-jobs"], cwd=REPO, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _ready(http_port) and _serving(grpc_port), 120, "the gateway process to become ready")
        with Traffic(grpc_port, http_port) as traffic:
            time.sleep(1.0)
            signalled = time.monotonic()
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=30) == 0
            time.sleep(0.5)  # calls on to a closed port
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()
    drain_end = signalled + DRAIN_S  # the gateway's own drain ends later still: it got the signal after this
    before = [(t, transport, outcome) for t, transport, outcome in traffic.calls if t < drain_end]
    bad = [call for call in before if call[2] not in SERVED | REFUSED]
    assert not bad, f"calls started before the end of the drain that were neither served nor refused: {bad[:10]}"
    # Through the drain (after the probes have turned) calls are still served on both transports.
    during = [call for call in before if signalled + 0.5 < call[0] < drain_end - 0.2]
    assert {transport for _, transport, _ in during} == {"grpc", "http"}
    assert all(outcome in SERVED for _, _, outcome in during), during[:10]
    # Readiness turns at once on both probes.
    for probe, not_ready in (("health", "NOT_SERVING"), ("readyz", "503")):
        turned = [t for t, name, outcome in traffic.probes if name == probe and t > signalled and outcome == not_ready]
        assert turned and turned[0] - signalled < 0.5, (probe, traffic.probes[-20:])
        served_before = [o for t, name, o in traffic.probes if name == probe and t < signalled]
        assert {"SERVING", "200"} & set(served_before), served_before
    # After the drain, new calls are refused by the gateway, then by the closed ports. (A call that
    # arrives in the very instant a port closes may still see it close: no server can answer it.)
    after = Counter(outcome for t, _, outcome in traffic.calls if t > drain_end)
    assert after["UNAVAILABLE"] + after["503"] > 0, after
    assert "gateway stopped" in (tmp_path / "serve.log").read_text()
