"""The gateway over both backends, and a model version rolled out under gateway traffic."""

from __future__ import annotations

import threading
import time

import pytest

from scoring.backends.tfserving import TFServingBackend
from scoring.settings import BackendSettings
from service.protos import classifier_pb2 as pb
from tests.service.gateway.conftest import start_embedded
from tests.support.model_roots import SAMPLE_TEXTS, publish_copy

pytestmark = pytest.mark.integration


def answers(c, model):
    grpc_answer = c.classify_grpc(SAMPLE_TEXTS, model=model, top_k=3)
    http_answer = c.classify_http(SAMPLE_TEXTS, model=model, top_k=3).json()
    return ([[(t.name, round(t.probability, 4)) for t in r.topics] for r in grpc_answer.results],
            [[(t["name"], round(t["probability"], 4)) for t in r["topics"]] for r in http_answer["results"]],
            (grpc_answer.model, grpc_answer.version), (http_answer["model"], http_answer["version"]))


def test_tfserving_backend_answers_like_the_embedded_one(prediction_server, gateway, start_gateway, make_clients,
                                                        tiny_model_root):
    backend = TFServingBackend(BackendSettings(tfserving_addresses=[prediction_server.address],
                                               model_root=tiny_model_root))
    try:
        over_tfs = make_clients(start_gateway(backend=backend))
        embedded = make_clients(gateway)
        for model in ("rnn", "ensemble"):
            assert answers(over_tfs, model) == answers(embedded, model)
        listed = over_tfs.stub.ListModels(pb.ListModelsRequest(), timeout=10)
        assert {m.name for m in listed.models} == {"rnn", "gru", "sentence", "ensemble"} and all(m.ready for m in listed.models)
        assert over_tfs.http.get("/readyz").status_code == 200
        with pytest.raises(Exception) as info:
            over_tfs.classify_grpc(SAMPLE_TEXTS[:1], model="nosuch")
        assert info.value.code().name == "NOT_FOUND"
    finally:
        backend.close()


def test_version_rollout_under_gateway_traffic_fails_no_request(writable_model_root, start_gateway, make_clients):
    root = writable_model_root
    backend = start_embedded(root.path, poll_s=0.2)
    try:
        c = make_clients(start_gateway(backend=backend, batch_max_delay_ms=5))
        failures: list[BaseException] = []
        versions: list[tuple[str, int]] = []
        stop = threading.Event()

        def traffic(transport):
            while not stop.is_set():
                try:
                    if transport == "grpc":
                        versions.append(("grpc", c.classify_grpc(SAMPLE_TEXTS[:2], model="rnn").version))
                    else:
                        response = c.classify_http(SAMPLE_TEXTS[:2], model="rnn")
                        assert response.status_code == 200, response.text
                        versions.append(("http", response.json()["version"]))
                except BaseException as exc:  # noqa: BLE001 - every failure is the finding
                    failures.append(exc)

        threads = [threading.Thread(target=traffic, args=(t,)) for t in ("grpc", "grpc", "http", "http")]
        for t in threads:
            t.start()
        time.sleep(0.5)
        assert publish_copy(root, "rnn", 1) == 2
        deadline = time.monotonic() + 60
        while not {("grpc", 2), ("http", 2)} <= set(versions[-50:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(30)
        assert not failures, failures[:3]
        assert {v for _, v in versions} == {1, 2} and versions[-1][1] == 2
        assert [m.versions[-1].version for m in c.stub.ListModels(pb.ListModelsRequest()).models
                if m.name == "rnn"] == [2]
    finally:
        backend.close()
