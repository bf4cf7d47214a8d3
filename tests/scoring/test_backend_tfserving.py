"""The TF Serving backend over real gRPC against the PredictionService protocol double."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from scoring.backends import create_backend
from scoring.backends.tfserving import TFServingBackend
from scoring.errors import DeadlineExceeded, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from scoring.settings import BackendSettings
from tests.support.model_roots import SAMPLE_TEXTS, publish_copy, saved_model_probabilities
from tests.support.prediction_server import replay_warmup
from tests.support.processes import REPO, free_port, wait_for
from tests.support.traffic import Traffic
from training.layout import EXTRA_DIR, OUTPUT_KEY, WARMUP_FILE, ModelRoot

pytestmark = pytest.mark.integration


def tfserving(root, *addresses: str, **settings) -> TFServingBackend:
    backend = create_backend(BackendSettings(model_root=root, tfserving_addresses=list(addresses), **settings))
    assert isinstance(backend, TFServingBackend)
    return backend


@pytest.fixture
def client(prediction_server, tiny_model_root):
    backend = tfserving(tiny_model_root, prediction_server.address)
    yield backend
    backend.close()


@pytest.mark.parametrize("model", ["rnn", "ensemble"])
def test_same_probabilities_as_the_saved_model(client, tiny_model_root, model):
    root = ModelRoot(tiny_model_root)
    result = client.classify(SAMPLE_TEXTS, model, timeout=30)
    assert (result.model, result.version) == (model, 1)
    assert result.labels == root.read_labels(model, 1)
    assert result.metadata.model == model
    np.testing.assert_allclose(result.probabilities,
                               saved_model_probabilities(root, model, 1, SAMPLE_TEXTS), rtol=1e-5, atol=1e-6)


def test_unknown_model_version_or_label_is_not_found(client):
    with pytest.raises(NotFound, match="Latest\\(nope\\)"):
        client.classify(["text"], "nope")
    with pytest.raises(NotFound, match="Specific\\(rnn, 7\\)"):
        client.classify(["text"], "rnn", version=7)
    with pytest.raises(NotFound, match="version label: canary"):
        client.classify(["text"], "rnn", version_label="canary")
    with pytest.raises(InvalidArgument):
        client.classify(["text"], "rnn", version=1, version_label="stable")


def test_readiness_and_models_from_get_model_status(client, tiny_model_root):
    assert client.ready() and client.ready("rnn")
    assert not client.ready("nope")
    infos = {info.name: info for info in client.models()}
    assert set(infos) == set(ModelRoot(tiny_model_root).models())
    assert [(v.version, v.state) for v in infos["gru"].versions] == [(1, "AVAILABLE")]


def test_not_ready_and_unavailable_after_bounded_retries_when_server_down(tiny_model_root):
    backend = tfserving(tiny_model_root, f"127.0.0.1:{free_port()}", tfserving_retries=2,
                        tfserving_backoff_s=0.1)
    try:
        assert not backend.ready()
        started = time.monotonic()
        with pytest.raises(Unavailable, match="after 3 attempt"):
            backend.classify(["text"], "rnn", timeout=10)
        elapsed = time.monotonic() - started
        assert 0.3 <= elapsed < 5, elapsed  # backoff 0.1 + 0.2, then gave up well before the deadline
    finally:
        backend.close()


def test_recovers_when_a_stopped_server_comes_back(start_prediction_server, tiny_model_root):
    first = start_prediction_server(tiny_model_root)
    port = first.port
    backend = tfserving(tiny_model_root, first.address, tfserving_retries=1, tfserving_backoff_s=0.05)
    try:
        assert backend.classify(["text"], "rnn", timeout=30).version == 1
        first.stop(grace=0)
        with pytest.raises(Unavailable):
            backend.classify(["text"], "rnn", timeout=30)
        start_prediction_server(tiny_model_root, port=port)
        wait_for(lambda: backend.ready("rnn"), timeout=10)
        assert backend.classify(["text"], "rnn", timeout=30).version == 1
    finally:
        backend.close()


def test_deadline_exceeded_when_server_is_slow(start_prediction_server, tiny_model_root):
    slow = start_prediction_server(tiny_model_root, latency_s=1.5)
    backend = tfserving(tiny_model_root, slow.address)
    try:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            backend.classify(["text"], "rnn", timeout=0.3)
        assert time.monotonic() - started < 1.2
    finally:
        backend.close()


def test_round_robin_and_retry_across_addresses(prediction_server, start_prediction_server, tiny_model_root):
    second = start_prediction_server(tiny_model_root)
    before = prediction_server.predict_calls
    backend = tfserving(tiny_model_root, prediction_server.address, second.address)
    try:
        for _ in range(10):
            backend.classify(SAMPLE_TEXTS[:1], "gru", timeout=30)
        assert (prediction_server.predict_calls - before, second.predict_calls) == (5, 5)
        second.stop(grace=0)
        for _ in range(4):  # calls landing on the stopped server are retried on the live one
            assert backend.classify(SAMPLE_TEXTS[:1], "gru", timeout=30).version == 1
        assert prediction_server.predict_calls - before == 9
    finally:
        backend.close()


def test_message_size_limit_is_resource_exhausted(prediction_server, tiny_model_root):
    backend = tfserving(tiny_model_root, prediction_server.address, max_message_bytes=4096)
    try:
        assert backend.classify(["short text"], "rnn", timeout=30).version == 1
        with pytest.raises(ResourceExhausted):
            backend.classify(["x" * 10_000], "rnn", timeout=30)
    finally:
        backend.close()


def test_version_label_and_swap_under_traffic(writable_model_root, start_prediction_server):
    root = writable_model_root
    server = start_prediction_server(root, poll_interval_s=0.1)
    backend = tfserving(root.path, server.address)
    try:
        with Traffic(lambda: backend.classify(SAMPLE_TEXTS, "rnn", timeout=30).version) as traffic:
            wait_for(lambda: len(traffic.answers) >= 10)
            root.set_version_label("rnn", "stable", 1)
            assert publish_copy(root, "rnn", 1) == 2
            wait_for(lambda: traffic.answers[-1] == 2)
        assert not traffic.failures, traffic.failures[:3]
        assert traffic.answers[0] == 1 and traffic.answers[-1] == 2
        assert backend.classify(["text"], "rnn", version_label="stable").version == 1
        assert {(v.version, v.state) for v in next(i for i in backend.models() if i.name == "rnn").versions} \
            == {(1, "AVAILABLE"), (2, "AVAILABLE")}
    finally:
        backend.close()


def test_warmup_records_replay_against_the_server(prediction_server, tiny_model_root):
    path = Path(tiny_model_root) / "rnn" / "1" / EXTRA_DIR / WARMUP_FILE
    responses = replay_warmup(prediction_server.address, path)
    assert responses
    for response in responses:
        assert response.model_spec.name == "rnn" and response.model_spec.version.value == 1
        assert list(response.outputs[OUTPUT_KEY].tensor_shape.dim)[1].size == 46


def test_server_rejects_malformed_requests_like_tf_serving(prediction_server):
    from scoring.backends.tfs_api import PredictionStub, PredictRequest, string_tensor

    with grpc.insecure_channel(prediction_server.address) as channel:
        stub = PredictionStub(channel)
        request = PredictRequest()
        request.model_spec.name = "rnn"
        request.model_spec.signature_name = "other"
        request.inputs["text"].CopyFrom(string_tensor(["x"]))
        with pytest.raises(grpc.RpcError) as info:
            stub.predict(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        request.model_spec.signature_name = ""
        request.inputs["wrong"].CopyFrom(string_tensor(["x"]))
        with pytest.raises(grpc.RpcError) as info:
            stub.predict(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_server_runs_as_a_module(tiny_model_root):
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.prediction_server", "--model-root", str(tiny_model_root),
         "--port", "0"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    backend = None
    try:
        give_up = threading.Timer(120, process.kill)
        give_up.start()
        line = process.stdout.readline()
        give_up.cancel()
        assert "listening on 127.0.0.1:" in line, line
        backend = tfserving(tiny_model_root, line.split()[-1])
        wait_for(lambda: backend.ready("rnn"), timeout=30)
        assert backend.classify(SAMPLE_TEXTS[:2], "rnn", timeout=30).probabilities.shape[0] == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if backend is not None:
            backend.close()
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
