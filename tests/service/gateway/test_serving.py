"""Serving behaviour through real servers: micro-batching, health, reflection, abstain, metrics."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.service.gateway.conftest import SLOW_CALL_S, start_embedded
from tests.support.model_roots import SAMPLE_TEXTS, saved_model_probabilities
from training.layout import EXTRA_DIR, METADATA_FILE

pytestmark = pytest.mark.integration

N_CONCURRENT = 8


def backend_calls(gateway, model: str) -> float:
    """Backend calls so far, read from the gateway's own batch-size histogram."""
    return gateway.core.metrics.registry.get_sample_value("newsclf_batch_documents_count", {"model": model}) or 0.0


def topics_of_grpc(response):
    return [[(t.name, round(t.probability, 5)) for t in r.topics] for r in response.results]


def topics_of_json(body):
    return [[(t["name"], round(t["probability"], 5)) for t in r["topics"]] for r in body["results"]]


@pytest.fixture
def model_call_of(slow_server):
    """Makes every backend call take ``seconds``, so concurrent requests meet in the queue."""
    def set_latency(seconds: float) -> None:
        slow_server.latency_s = seconds

    yield set_latency
    slow_server.latency_s = SLOW_CALL_S


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_concurrent_requests_are_merged_and_answers_unchanged(start_gateway, make_clients, slow_backend,
                                                              model_call_of, transport):
    model_call_of(0.2)
    gateway = start_gateway(backend=slow_backend, batch_max_delay_ms=300, batch_max_size=64, grpc_workers=32)
    c = make_clients(gateway)
    texts = [f"{SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)]} item {i}" for i in range(N_CONCURRENT)]

    def ask(text):
        if transport == "grpc":
            return topics_of_grpc(c.classify_grpc([text], model="gru", top_k=4))
        response = c.classify_http([text], model="gru", top_k=4)
        assert response.status_code == 200, response.text
        return topics_of_json(response.json())

    alone = [ask(text) for text in texts]  # one at a time: one backend call each
    calls_before = backend_calls(gateway, "gru")
    assert calls_before == N_CONCURRENT
    barrier = threading.Barrier(N_CONCURRENT)

    def ask_together(text):
        barrier.wait()
        return ask(text)

    with ThreadPoolExecutor(N_CONCURRENT) as pool:
        together = list(pool.map(ask_together, texts))
    calls = backend_calls(gateway, "gru") - calls_before
    assert together == alone
    # The first request finds the model idle and goes alone; the rest queue behind it and share.
    assert 2 <= calls <= 3, f"{calls} backend calls for {N_CONCURRENT} concurrent requests"
    merged = gateway.core.metrics.registry.get_sample_value("newsclf_batch_requests_sum", {"model": "gru"})
    assert merged == 2 * N_CONCURRENT  # every request counted once in a batch, alone and together


def test_batches_respect_max_size(start_gateway, make_clients):
    gateway = start_gateway(batch_max_delay_ms=200, batch_max_size=4)
    c = make_clients(gateway)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: c.classify_grpc([t, t], model="rnn"), SAMPLE_TEXTS * 2))
    assert all(len(r.results) == 2 for r in results)
    registry = gateway.core.metrics.registry
    count = registry.get_sample_value("newsclf_batch_documents_count", {"model": "rnn"})
    total = registry.get_sample_value("newsclf_batch_documents_sum", {"model": "rnn"})
    over = count - registry.get_sample_value("newsclf_batch_documents_bucket", {"model": "rnn", "le": "4.0"})
    assert total == 16 and over == 0 and count >= 4


def test_grpc_health_overall_and_per_model(gateway, clients):
    health = health_pb2_grpc.HealthStub(clients.channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ("", "newsclf.v1.Classifier", "newsclf.v1.Classifier/gru", "newsclf.v1.Classifier/ensemble"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == serving, service
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="newsclf.v1.Classifier/nosuch"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    ready = clients.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["models"] == {"ensemble": True, "gru": True, "rnn": True, "sentence": True}
    assert clients.http.get("/healthz").json() == {"status": "ok", "models": {}}


def test_health_turns_serving_only_once_models_load(start_gateway, make_clients, tiny_model_root, tmp_path):
    """Over an empty model root the gateway is alive but not ready until a model is published,
    and stops serving it (and overall) when it is withdrawn."""
    import shutil

    from scoring.backends.embedded import EmbeddedBackend
    from scoring.settings import BackendSettings

    root = tmp_path / "models"
    root.mkdir()
    backend = EmbeddedBackend(BackendSettings(model_root=root, model_poll_interval_s=0.2))
    try:
        gateway = start_gateway(backend=backend, model_poll_interval_s=0.1)
        c = make_clients(gateway)
        health = health_pb2_grpc.HealthStub(c.channel)
        request = health_pb2.HealthCheckRequest(service="")
        assert health.Check(request, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert c.http.get("/readyz").status_code == 503
        watch = health.Watch(request, timeout=60)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        staging = root / "rnn" / ".staging-test"
        shutil.copytree(tiny_model_root / "rnn" / "1", staging)
        staging.rename(root / "rnn" / "1")
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        assert c.http.get("/readyz").json()["models"] == {"rnn": True}
        assert c.classify_grpc(SAMPLE_TEXTS[:1], model="rnn").version == 1
        rnn_watch = health.Watch(health_pb2.HealthCheckRequest(service="newsclf.v1.Classifier/rnn"), timeout=60)
        assert next(rnn_watch).status == health_pb2.HealthCheckResponse.SERVING
        shutil.rmtree(root / "rnn")  # the model is withdrawn: it and the whole server stop serving
        assert next(rnn_watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        rnn_watch.cancel()
        assert health.Check(request, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        backend.close()


def test_health_turns_the_server_down_before_its_models_and_up_after_them(start_gateway, tiny_model_root,
                                                                           tmp_path):
    """A client that saw a model change status never finds the whole server's status lagging."""
    import shutil

    from scoring.backends.embedded import EmbeddedBackend
    from scoring.settings import BackendSettings
    from service.grpc_api.classifier import SERVICE_NAME

    root = tmp_path / "models"
    root.mkdir()
    backend = EmbeddedBackend(BackendSettings(model_root=root), poll=False)
    try:
        reporter = start_gateway(backend=backend, model_poll_interval_s=3600).grpc.health
        calls, set_status = [], reporter.servicer.set

        def recording(name, status):
            calls.append((name, status))
            set_status(name, status)

        reporter.servicer.set = recording
        shutil.copytree(tiny_model_root / "rnn", root / "rnn")
        backend.refresh()
        reporter.poll()
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        assert calls == [(f"{SERVICE_NAME}/rnn", serving), ("", serving), (SERVICE_NAME, serving)]
        calls.clear()
        shutil.rmtree(root / "rnn")
        backend.refresh()
        reporter.poll()
        assert calls == [("", not_serving), (SERVICE_NAME, not_serving), (f"{SERVICE_NAME}/rnn", not_serving)]
    finally:
        backend.close()


def test_reflection_lists_and_describes_the_api(clients):
    database = ProtoReflectionDescriptorDatabase(clients.channel)
    services = set(database.get_services())
    assert {"newsclf.v1.Classifier", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    pool = DescriptorPool(database)
    methods = {m.name: m for m in pool.FindServiceByName("newsclf.v1.Classifier").methods}
    assert set(methods) == {"Classify", "ClassifyStream", "ListModels"}
    assert methods["ClassifyStream"].client_streaming and methods["ClassifyStream"].server_streaming
    assert methods["Classify"].input_type.full_name == "newsclf.v1.ClassifyRequest"


def test_abstain_follows_the_exported_threshold(writable_model_root, start_gateway, make_clients):
    root = writable_model_root
    top = saved_model_probabilities(root, "gru", 1, SAMPLE_TEXTS).max(axis=1)
    threshold = float(np.median(top))
    _edit_metadata(root, "gru", lambda meta: meta["threshold"].update(value=threshold))
    _edit_metadata(root, "rnn", lambda meta: meta.update(threshold=None))
    backend = start_embedded(root.path)
    try:
        c = make_clients(start_gateway(backend=backend))
        response = c.classify_grpc(SAMPLE_TEXTS, model="gru", top_k=1)
        assert response.abstain_threshold == pytest.approx(threshold)
        flags = [r.abstained for r in response.results]
        assert flags == [bool(p < np.float32(threshold)) for p in top] and any(flags) and not all(flags)
        body = c.classify_http(SAMPLE_TEXTS, model="gru", top_k=1).json()
        assert [r["abstained"] for r in body["results"]] == flags
        no_threshold = c.classify_grpc(SAMPLE_TEXTS, model="rnn")
        assert not no_threshold.HasField("abstain_threshold")
        assert not any(r.abstained for r in no_threshold.results)
        stats = c.http.get("/metrics").text
        assert f'newsclf_abstained_documents_total{{model="gru",version="1"}} {float(sum(flags) * 2)}' in stats
    finally:
        backend.close()


def _edit_metadata(root, model, change) -> None:
    path = root.version_dir(model, 1) / EXTRA_DIR / METADATA_FILE
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_metrics_exposition(clients):
    clients.classify_grpc(SAMPLE_TEXTS, model="gru")
    clients.classify_http(SAMPLE_TEXTS[:2], model="gru")
    with pytest.raises(grpc.RpcError):
        clients.classify_grpc(SAMPLE_TEXTS, model="nosuch")
    response = clients.http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'newsclf_requests_total{method="Classify",model="gru",status="OK",transport="grpc",version="1"} 1.0' in text
    assert 'newsclf_requests_total{method="classify",model="gru",status="OK",transport="http",version="1"} 1.0' in text
    assert 'newsclf_requests_total{method="Classify",model="",status="NOT_FOUND",transport="grpc",version=""} 1.0' in text
    assert 'newsclf_documents_total{model="gru",version="1"} 6.0' in text
    for name in ("newsclf_request_latency_seconds_bucket", "newsclf_backend_latency_seconds_bucket",
                 "newsclf_batch_documents_bucket", "newsclf_queued_documents 0.0"):
        assert name in text
