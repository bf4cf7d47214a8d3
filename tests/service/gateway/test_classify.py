"""Classification over real gRPC and HTTP servers on the embedded backend: answers and models."""

from __future__ import annotations

import numpy as np
import pytest

from service.protos import classifier_pb2 as pb
from tests.support.model_roots import SAMPLE_TEXTS, saved_model_probabilities
from training.layout import ModelRoot

pytestmark = pytest.mark.integration


def test_grpc_answer_is_the_saved_models_top_k(clients, tiny_model_root):
    response = clients.classify_grpc(SAMPLE_TEXTS, model="gru", top_k=5)
    root = ModelRoot(tiny_model_root)
    expected = saved_model_probabilities(root, "gru", 1, SAMPLE_TEXTS)
    labels = root.read_labels("gru", 1)
    assert (response.model, response.version) == ("gru", 1)
    assert [r.id for r in response.results] == [f"d{i}" for i in range(len(SAMPLE_TEXTS))]
    for result, row in zip(response.results, expected):
        order = np.argsort(-row, kind="stable")[:5]
        assert [t.name for t in result.topics] == [labels[j] for j in order]
        assert [t.probability for t in result.topics] == pytest.approx(row[order].tolist(), abs=1e-5)


def test_http_and_grpc_give_the_same_answer(clients):
    grpc_answer = clients.classify_grpc(SAMPLE_TEXTS, model="rnn", top_k=3)
    response = clients.classify_http(SAMPLE_TEXTS, model="rnn", top_k=3)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"]) == ("rnn", 1)
    for http_result, grpc_result in zip(body["results"], grpc_answer.results):
        assert http_result["id"] == grpc_result.id
        assert [t["name"] for t in http_result["topics"]] == [t.name for t in grpc_result.topics]
        assert [t["probability"] for t in http_result["topics"]] == pytest.approx(
            [t.probability for t in grpc_result.topics], abs=1e-6)
        assert http_result["abstained"] == grpc_result.abstained


def test_default_top_k_version_and_label(clients, gateway):
    response = clients.classify_grpc(SAMPLE_TEXTS[:1], model="ensemble")
    assert len(response.results[0].topics) == gateway.settings.default_top_k
    assert clients.classify_grpc(SAMPLE_TEXTS[:1], model="gru", version=1).version == 1
    body = clients.classify_http(SAMPLE_TEXTS[:1], model="gru", version=1, top_k=46).json()
    assert len(body["results"][0]["topics"]) == 46
    assert sum(t["probability"] for t in body["results"][0]["topics"]) == pytest.approx(1.0, abs=1e-3)


def test_list_models_on_both_transports(clients, tiny_model_root):
    root = ModelRoot(tiny_model_root)
    answer = clients.stub.ListModels(pb.ListModelsRequest(), timeout=10)
    by_name = {m.name: m for m in answer.models}
    assert set(by_name) == set(root.models())
    gru = by_name["gru"]
    meta = root.read_metadata("gru", 1)
    assert gru.ready and [v.version for v in gru.versions] == [1]
    assert list(gru.versions[0].labels) == meta.labels and len(meta.labels) == 46
    assert dict(gru.versions[0].metrics) == pytest.approx(meta.metrics)
    body = clients.http.get("/v1/models").json()
    http_by_name = {m["name"]: m for m in body["models"]}
    assert set(http_by_name) == set(by_name)
    assert http_by_name["gru"]["versions"][0]["metrics"] == pytest.approx(meta.metrics)
    assert http_by_name["gru"]["ready"] is True


def test_stream_answers_in_order_and_reports_errors_per_message(clients):
    messages = []
    for i in range(12):
        text = "" if i == 5 else SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)]
        messages.append(pb.ClassifyRequest(model="nosuch" if i == 8 else "gru", top_k=2,
                                           documents=[pb.Document(text=text, id=str(i))]))
    answers = list(clients.stub.ClassifyStream(iter(messages), timeout=30))
    assert [a.sequence for a in answers] == list(range(12))
    assert answers[5].WhichOneof("outcome") == "error" and answers[5].error.code == "INVALID_ARGUMENT"
    assert answers[8].error.code == "NOT_FOUND"
    unary = clients.classify_grpc(SAMPLE_TEXTS, model="gru", top_k=2)
    for i, answer in enumerate(answers):
        if i in (5, 8):
            continue
        result = answer.response.results[0]
        assert result.id == str(i)
        expected = unary.results[i % len(SAMPLE_TEXTS)]
        assert [t.name for t in result.topics] == [t.name for t in expected.topics]


def test_stream_ping_pong_gets_each_answer_before_the_next_request(clients):
    """A client that waits for each answer before sending more must not stall the stream."""
    import queue

    outbox: queue.Queue = queue.Queue()

    def requests():
        while (item := outbox.get()) is not None:
            yield item

    stream = clients.stub.ClassifyStream(requests(), timeout=30)
    for i, text in enumerate(SAMPLE_TEXTS):
        outbox.put(pb.ClassifyRequest(model="rnn", documents=[pb.Document(text=text)]))
        answer = next(stream)
        assert answer.sequence == i and answer.response.model == "rnn"
    outbox.put(None)
    assert list(stream) == []


def test_openapi_document_describes_the_api(clients):
    doc = clients.http.get("/openapi.json").json()
    assert {"/v1/classify", "/v1/models", "/healthz", "/readyz", "/metrics"} <= set(doc["paths"])
    classify = doc["paths"]["/v1/classify"]["post"]
    assert {"200", "400", "404", "429", "503", "504"} <= set(classify["responses"])
    assert "ErrorBody" in doc["components"]["schemas"]
