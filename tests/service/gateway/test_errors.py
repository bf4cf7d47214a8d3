"""Every error case on both transports: gRPC status codes and HTTP statuses with JSON bodies."""

from __future__ import annotations

import threading
import time

import grpc
import httpx
import pytest

from scoring.backends.tfserving import TFServingBackend
from scoring.settings import BackendSettings
from service.protos import classifier_pb2 as pb
from tests.service.gateway.conftest import start_embedded
from tests.support.model_roots import SAMPLE_TEXTS, publish_numeric_model
from tests.support.processes import HOST, free_port

pytestmark = pytest.mark.integration

TEXT = SAMPLE_TEXTS[0]


def grpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def assert_json_error(response: httpx.Response, status: int, code: str, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert fragment in body["error"]["message"]


@pytest.mark.parametrize("texts, fields, fragment", [
    ([], {}, "at least one document"),
    ([""], {}, "documents[0].text is empty"),
    ([TEXT, " \n\t "], {}, "documents[1].text is empty"),
    ([TEXT], {"top_k": 47}, "top_k must be between 1 and 46"),
    ([TEXT], {"version": 0}, "version must be a positive integer"),
])
def test_invalid_argument(clients, texts, fields, fragment):
    error = grpc_error(clients.classify_grpc, texts, **fields)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in error.details()
    assert_json_error(clients.classify_http(texts, **fields), 400, "INVALID_ARGUMENT", fragment)


def test_invalid_model_name_and_http_only_shapes(clients):
    error = grpc_error(clients.classify_grpc, [TEXT], model="")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "model is required" in error.details()
    assert_json_error(clients.classify_http([TEXT], model="../etc"), 400, "INVALID_ARGUMENT", "invalid model name")
    assert_json_error(clients.classify_http([TEXT], top_k=-1), 400, "INVALID_ARGUMENT", "top_k")
    assert_json_error(clients.classify_http([TEXT], version=1, version_label="stable"), 400, "INVALID_ARGUMENT",
                      "either version or version_label")
    # Request-validation errors (FastAPI's 422) are 400 with the same JSON shape.
    assert_json_error(clients.http.post("/v1/classify", content=b"{not json", headers={"content-type": "application/json"}),
                      400, "INVALID_ARGUMENT", "JSON")
    assert_json_error(clients.http.post("/v1/classify", json={"model": "gru"}), 400, "INVALID_ARGUMENT", "documents")
    assert_json_error(clients.http.post("/v1/classify", json={"model": "gru", "documents": [{"txt": "x"}]}),
                      400, "INVALID_ARGUMENT", "documents.0.text")
    assert_json_error(clients.http.post("/v1/classify", json={"model": "gru", "top_k": "many", "documents": []}),
                      400, "INVALID_ARGUMENT", "top_k")
    assert_json_error(clients.http.get("/v1/nothing-here"), 404, "NOT_FOUND")
    assert_json_error(clients.http.get("/v1/classify"), 405, "UNIMPLEMENTED")


@pytest.mark.parametrize("fields, fragment", [
    ({"model": "nosuch"}, "'nosuch'"),
    ({"model": "gru", "version": 99}, "version 99"),
    ({"model": "gru", "version_label": "canary"}, "'canary'"),
])
def test_not_found(clients, fields, fragment):
    error = grpc_error(clients.classify_grpc, [TEXT], **fields)
    assert error.code() == grpc.StatusCode.NOT_FOUND and fragment in error.details()
    assert_json_error(clients.classify_http([TEXT], **fields), 404, "NOT_FOUND", fragment)


def test_size_limits(start_gateway, make_clients):
    gateway = start_gateway(max_documents=4, max_chars=1000, max_request_bytes=64 * 1024)
    c = make_clients(gateway)
    cases = [([TEXT] * 5, "5 in one request; the limit is 4"), (["x" * 1001], "1001 characters; the limit is 1000")]
    for texts, fragment in cases:
        error = grpc_error(c.classify_grpc, texts)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and fragment in error.details()
        assert_json_error(c.classify_http(texts), 413, "RESOURCE_EXHAUSTED", fragment)
    # Over the message size: gRPC refuses the message itself, HTTP refuses the body with 413.
    big = ["word " * 20_000]
    assert grpc_error(c.classify_grpc, big).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_json_error(c.classify_http(big), 413, "RESOURCE_EXHAUSTED", "larger than the limit of 65536 bytes")

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for _ in range(20):
            yield b"x" * 8192

    assert_json_error(c.http.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"}),
                      413, "RESOURCE_EXHAUSTED")
    assert c.classify_grpc([TEXT] * 4).results  # still serving


def test_overload_is_resource_exhausted_and_the_admitted_request_still_succeeds(start_gateway, make_clients,
                                                                               slow_backend):
    gateway = start_gateway(backend=slow_backend, max_queued_documents=3)
    c = make_clients(gateway)
    outcome = {}
    first = threading.Thread(target=lambda: outcome.setdefault("first", c.classify_grpc([TEXT] * 3)))
    first.start()
    deadline = time.monotonic() + 10
    while gateway.core.batcher.queued_documents < 3:
        assert time.monotonic() < deadline, "the first request was never admitted"
        time.sleep(0.005)
    error = grpc_error(c.classify_grpc, [TEXT])
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "overloaded" in error.details()
    assert_json_error(c.classify_http([TEXT]), 429, "RESOURCE_EXHAUSTED", "retry later")
    first.join(10)
    assert len(outcome["first"].results) == 3
    assert c.classify_http([TEXT]).status_code == 200  # room again


def test_deadline_exceeded(start_gateway, make_clients, slow_backend):
    gateway = start_gateway(backend=slow_backend, request_timeout_s=0.2)
    c = make_clients(gateway)
    started = time.monotonic()
    error = grpc_error(c.classify_grpc, [TEXT])  # no client deadline: the gateway's own limit applies
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "deadline" in error.details().lower()
    assert time.monotonic() - started < 0.9
    assert_json_error(c.classify_http([TEXT]), 504, "DEADLINE_EXCEEDED")
    error = grpc_error(c.classify_grpc, [TEXT], timeout=0.05)  # client deadline, shorter still
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_http_client_deadline_header(start_gateway, make_clients, slow_backend):
    gateway = start_gateway(backend=slow_backend)
    c = make_clients(gateway)
    started = time.monotonic()
    response = c.http.post("/v1/classify", json={"model": "gru", "documents": [{"text": TEXT}]},
                           headers={"X-Request-Timeout-Ms": "150"})
    assert_json_error(response, 504, "DEADLINE_EXCEEDED")
    assert time.monotonic() - started < 0.9
    stats = c.http.get("/metrics").text  # no answer from "gru" yet here, so the name is not a label
    assert ('newsclf_requests_total{method="classify",model="",status="DEADLINE_EXCEEDED",transport="http",'
            'version=""} 1.0') in stats


def test_backend_down_is_unavailable(start_gateway, make_clients):
    dead = f"{HOST}:{free_port()}"  # a port nothing listens on
    backend = TFServingBackend(BackendSettings(tfserving_addresses=[dead], tfserving_timeout_s=1.0,
                                               tfserving_retries=1, tfserving_backoff_s=0.01))
    try:
        gateway = start_gateway(backend=backend)
        c = make_clients(gateway)
        error = grpc_error(c.classify_grpc, [TEXT])
        assert error.code() == grpc.StatusCode.UNAVAILABLE and dead in error.details()
        assert_json_error(c.classify_http([TEXT]), 503, "UNAVAILABLE")
        assert_json_error(c.http.get("/readyz"), 503, "UNAVAILABLE")
        assert c.http.get("/healthz").status_code == 200  # alive, just not ready
    finally:
        backend.close()


def test_lone_surrogate_in_json_is_invalid_argument(clients):
    """JSON may escape half a UTF-16 pair; such a string has no UTF-8 form for the model."""
    body = b'{"model": "gru", "documents": [{"text": "oil prices"}, {"text": "oil \\ud800 prices"}]}'
    response = clients.http.post("/v1/classify", content=body, headers={"content-type": "application/json"})
    assert_json_error(response, 400, "INVALID_ARGUMENT", "documents[1].text is not valid Unicode")


def test_tensorflow_failures_are_client_errors(start_gateway, make_clients, writable_model_root):
    """TensorFlow failing inside the model is the input's fault (400) or too big to run (429), never INTERNAL."""
    publish_numeric_model(writable_model_root)
    backend = start_embedded(writable_model_root.path)
    try:
        c = make_clients(start_gateway(backend=backend))
        assert_json_error(c.classify_http(["three"], model="numeric"), 400, "INVALID_ARGUMENT", "convert string")
        error = grpc_error(c.classify_grpc, ["three"], model="numeric")
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "convert string" in error.details()
        assert_json_error(c.classify_http([str(2 ** 60)], model="numeric"), 429, "RESOURCE_EXHAUSTED", "OOM")
        error = grpc_error(c.classify_grpc, [str(2 ** 60)], model="numeric")
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "OOM" in error.details()
        assert c.classify_http(["2"], model="numeric").status_code == 200
    finally:
        backend.close()


def test_api_keys(start_gateway, make_clients):
    gateway = start_gateway(api_keys="k-one,k-two")
    anonymous, wrong, good = make_clients(gateway), make_clients(gateway, "nope"), make_clients(gateway, "k-two")
    for c, fragment in ((anonymous, "missing API key"), (wrong, "invalid API key")):
        error = grpc_error(c.classify_grpc, [TEXT])
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and fragment in error.details()
        assert grpc_error(c.stub.ListModels, pb.ListModelsRequest()).code() == grpc.StatusCode.UNAUTHENTICATED
        stream_error = grpc_error(lambda: list(c.stub.ClassifyStream(iter([]), metadata=c.metadata)))
        assert stream_error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert_json_error(c.classify_http([TEXT]), 401, "UNAUTHENTICATED", fragment)
        assert_json_error(c.http.get("/v1/models"), 401, "UNAUTHENTICATED")
    assert good.classify_grpc([TEXT]).results
    assert good.classify_http([TEXT]).status_code == 200
    assert good.http.get("/v1/models").status_code == 200
    # Probes stay open: load balancers do not carry keys.
    assert anonymous.http.get("/healthz").status_code == 200
    assert anonymous.http.get("/readyz").status_code == 200
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    health = health_pb2_grpc.HealthStub(anonymous.channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
    assert "newsclf.v1.Classifier" in ProtoReflectionDescriptorDatabase(anonymous.channel).get_services()
