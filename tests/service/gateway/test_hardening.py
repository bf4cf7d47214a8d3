"""Inputs no client of ours would send: each gets a clear 4xx / non-INTERNAL status, bounded
messages, and the gateway goes on serving. Also the offline docs, OPTIONS and the Allow header."""

from __future__ import annotations

import logging
import re

import grpc
import pytest

from service.protos import classifier_pb2 as pb
from tests.service.gateway.test_errors import assert_json_error, grpc_error
from tests.support.model_roots import SAMPLE_TEXTS

pytestmark = pytest.mark.integration

TEXT = SAMPLE_TEXTS[0]
CLASSIFY = "/newsclf.v1.Classifier/Classify"
STREAM = "/newsclf.v1.Classifier/ClassifyStream"
UNDECODABLE = [
    b"\xff\xff\xff\xff",                    # a field number of zero / truncated varint
    b"\x12\x03\xff\xfe\xfd",                # model (string field 2) that is not UTF-8
    b"\x0a\x05\x0a\x03\xc3\x28a",           # documents[0].text that is not UTF-8
    b"\x0d\x00\x00",                         # a fixed32 wire type cut short
]


def post_raw(clients, body: bytes, path: str = "/v1/classify"):
    return clients.http.post(path, content=body, headers={"content-type": "application/json"})


def test_lone_surrogate_in_any_field_is_400_and_not_counted_ok(clients):
    for field, body in [
        ("documents[0].id", b'{"model": "gru", "documents": [{"text": "oil", "id": "x\\ud800"}]}'),
        ("version_label", b'{"model": "gru", "version_label": "\\udfff", "documents": [{"text": "oil"}]}'),
        ("a key in documents[0]", b'{"model": "gru", "documents": [{"text": "oil", "\\ud800": 1}]}'),
    ]:
        assert_json_error(post_raw(clients, body), 400, "INVALID_ARGUMENT", f"{field} is not valid Unicode")
    # A surrogate pair is a real character and goes through.
    ok = post_raw(clients, b'{"model": "gru", "documents": [{"text": "oil \\ud83d\\ude00", "id": "\\ud83d\\ude00"}]}')
    assert ok.status_code == 200 and ok.json()["results"][0]["id"] == "\U0001F600"
    stats = clients.http.get("/metrics").text
    assert 'status="OK",transport="http"' in stats and 'status="INTERNAL"' not in stats
    assert re.search(r'newsclf_requests_total\{method="classify",model="gru",status="OK",transport="http",'
                     r'version="1"\} 1\.0', stats)


def test_undecodable_grpc_messages_are_invalid_argument_with_one_warning(clients, caplog):
    raw = clients.channel.unary_unary(CLASSIFY)
    with caplog.at_level(logging.WARNING, logger="service.grpc_api.methods"):
        for data in UNDECODABLE * 10:
            error = grpc_error(raw, data, timeout=10)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
            assert "not a valid newsclf.v1.ClassifyRequest" in error.details()
    warnings = [r for r in caplog.records if r.name == "service.grpc_api.methods"]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage() and not warnings[0].exc_info
    assert "undecodable newsclf.v1.Classifier.Classify request" in warnings[0].getMessage()
    assert clients.classify_grpc([TEXT]).results  # still serving


def test_a_bad_message_on_a_stream_is_answered_and_the_stream_goes_on(clients):
    good = pb.ClassifyRequest(model="gru", documents=[pb.Document(text=TEXT)]).SerializeToString()
    stream = clients.channel.stream_stream(STREAM, response_deserializer=pb.ClassifyStreamResponse.FromString)
    answers = list(stream(iter([good, UNDECODABLE[1], good, UNDECODABLE[0], good]), timeout=30))
    assert [a.sequence for a in answers] == [0, 1, 2, 3, 4]
    assert [a.WhichOneof("outcome") for a in answers] == ["response", "error", "response", "error", "response"]
    assert answers[1].error.code == "INVALID_ARGUMENT" and "not a valid" in answers[1].error.message


def test_model_name_with_a_trailing_newline_is_invalid(clients):
    error = grpc_error(clients.classify_grpc, [TEXT], model="gru\n")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "invalid model name" in error.details()
    assert_json_error(clients.classify_http([TEXT], model="gru\n"), 400, "INVALID_ARGUMENT", "invalid model name")


def test_error_messages_quote_client_input_briefly(clients):
    label, model = "x" * 10_000, "m" * 10_000
    error = grpc_error(clients.classify_grpc, [TEXT], version_label=label)
    assert error.code() == grpc.StatusCode.NOT_FOUND and "(10000 characters)" in error.details()
    assert len(error.details()) < 300
    response = clients.classify_http([TEXT], version_label=label)
    assert_json_error(response, 404, "NOT_FOUND", "(10000 characters)")
    assert len(response.json()["error"]["message"]) < 300
    error = grpc_error(clients.classify_grpc, [TEXT], model=model)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and len(error.details()) <= 1100
    extra_key = {"model": "gru", "documents": [{"text": TEXT, "k" * 10_000: 1}]}
    response = clients.http.post("/v1/classify", json=extra_key)
    assert_json_error(response, 400, "INVALID_ARGUMENT", "Extra inputs")
    assert len(response.json()["error"]["message"]) < 300


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "0", "-5", "0.0", "soon"])
def test_request_timeout_header_must_be_a_positive_number(clients, value):
    response = clients.http.post("/v1/classify", json={"model": "gru", "documents": [{"text": TEXT}]},
                                 headers={"X-Request-Timeout-Ms": value})
    assert_json_error(response, 400, "INVALID_ARGUMENT", "X-Request-Timeout-Ms")


def test_options_and_allow_list_every_method_of_the_path(start_gateway, make_clients, job_manager):
    c = make_clients(start_gateway(job_manager=job_manager))
    expected = {"/v1/classify": "OPTIONS, POST", "/v1/models": "GET, OPTIONS", "/v1/jobs": "GET, OPTIONS, POST",
                "/v1/jobs/abc": "DELETE, GET, OPTIONS", "/healthz": "GET, OPTIONS"}
    for path, allow in expected.items():
        response = c.http.options(path)
        assert response.status_code == 204 and response.headers["allow"] == allow, (path, response.headers)
    assert c.http.options("/v1/nothing").status_code == 404
    for method, path in (("GET", "/v1/classify"), ("PUT", "/v1/jobs"), ("POST", "/v1/jobs/abc")):
        response = c.http.request(method, path)
        assert_json_error(response, 405, "UNIMPLEMENTED")
        assert response.headers["allow"] == expected[path]


def test_docs_pages_load_everything_from_the_gateway(clients):
    for page in ("/docs", "/redoc"):
        response = clients.http.get(page)
        assert response.status_code == 200
        urls = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)["\']', response.text)
        urls += re.findall(r"""(?:url|Url)\s*:\s*["']([^"']+)["']""", response.text)
        assets = [u for u in urls if not u.startswith("#")]
        assert assets and not [u for u in assets if "://" in u or u.startswith("//")], assets
        for url in assets:
            asset = clients.http.get(url)
            assert asset.status_code == 200 and asset.content, url
    assert "://" not in clients.http.get("/docs").text.split("<script>")[-1]


def test_metrics_behind_the_key_when_asked(start_gateway, make_clients):
    gateway = start_gateway(api_keys="k1", metrics_auth=True)
    anonymous, keyed = make_clients(gateway), make_clients(gateway, "k1")
    assert_json_error(anonymous.http.get("/metrics"), 401, "UNAUTHENTICATED")
    assert keyed.http.get("/metrics").status_code == 200
    assert anonymous.http.get("/readyz").status_code == 200  # probes stay open


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_v1_and_v1alpha_with_package_paths(clients, version):
    """A client speaking either reflection protocol lists the services and gets files named by package."""
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    call = clients.channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                         request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                         response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    listed, described = list(call(iter([
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="newsclf.v1.Classifier"),
    ]), timeout=10))
    names = {service.name for service in listed.list_services_response.service}
    assert {"newsclf.v1.Classifier", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= names
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in described.file_descriptor_response.file_descriptor_proto]
    assert "newsclf/v1/classifier.proto" in {f.name for f in files}
