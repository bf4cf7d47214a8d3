"""A test double of TF Serving's gRPC API: PredictionService.Predict and ModelService.GetModelStatus.

This is NOT TF Serving (its binary cannot be installed here). It speaks the upstream
tensorflow-serving-api messages and services (not the gateway's own compiled subset, so every
test through it also checks that subset is wire-compatible) and runs the real SavedModels of a model root through the embedded
backend, so the TF Serving client backend, warmup records and deployment checks can be tested
over real gRPC. It copies the parts of TF Serving's behaviour clients depend on: newest version
plus labelled versions are served; ``NOT_FOUND`` for an unknown model or version,
``INVALID_ARGUMENT`` for an unknown version label or malformed input, ``FAILED_PRECONDITION``
for an unknown signature; the answer names the version that produced it; warmup records in
``assets.extra/tf_serving_warmup_requests`` are replayed when a version loads.

    python -m tests.support.prediction_server --model-root models --port 8500
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from scoring.backends.embedded import EmbeddedBackend, read_warmup_requests
from scoring.backends.tfs_api import PredictionStub, texts_of
from scoring.errors import NotFound, ServiceError, status_of
from scoring.settings import BackendSettings
from training.layout import INPUT_KEY, OUTPUT_KEY, SIGNATURE_NAME


def _spec_text(spec) -> str:
    """How TF Serving names a servable request in its NOT_FOUND messages."""
    if spec.HasField("version"):
        return f"Specific({spec.name}, {spec.version.value})"
    if spec.version_label:
        return f"Label({spec.name}, {spec.version_label})"
    return f"Latest({spec.name})"


class _Predictions(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: PredictionServer):
        self._server = server

    def Predict(self, request, context):
        self._server.count_call()
        if self._server.latency_s:
            time.sleep(self._server.latency_s)
        spec = request.model_spec
        if not spec.name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        signature = spec.signature_name or SIGNATURE_NAME
        if signature != SIGNATURE_NAME:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{signature}" not found.')
        if set(request.inputs) != {INPUT_KEY}:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"input keys {sorted(request.inputs)} do not match the signature's [{INPUT_KEY!r}]")
        unknown = set(request.output_filter) - {OUTPUT_KEY}
        if unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"output tensor alias(es) {sorted(unknown)} not found")
        try:
            texts = texts_of(request.inputs[INPUT_KEY])
        except (ValueError, UnicodeDecodeError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"input {INPUT_KEY!r}: {exc}")
        try:
            result = self._server.backend.classify(
                texts, spec.name,
                version=spec.version.value if spec.HasField("version") else None,
                version_label=spec.version_label or None)
        except NotFound:
            if spec.version_label and self._server.backend.ready(spec.name):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"Unrecognized servable version label: {spec.version_label}")
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {_spec_text(spec)}")
        except ServiceError as exc:
            context.abort(grpc.StatusCode[status_of(exc).grpc], exc.message)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = result.model
        response.model_spec.version.value = result.version
        response.model_spec.signature_name = signature
        response.outputs[OUTPUT_KEY].CopyFrom(tf.make_tensor_proto(result.probabilities))
        return response


class _ModelStatus(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: PredictionServer):
        self._server = server

    def GetModelStatus(self, request, context):
        spec = request.model_spec
        served = {info.name: info for info in self._server.backend.models()}
        if spec.name not in served:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
        versions = [v.version for v in served[spec.name].versions]
        if spec.HasField("version"):
            if spec.version.value not in versions:
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"Could not find version {spec.version.value} of model {spec.name}")
            versions = [spec.version.value]
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in versions:
            response.model_version_status.add(version=version,
                                              state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        return response


class PredictionServer:
    """The protocol double on ``host:port`` (port 0 picks a free one); use as a context manager."""

    def __init__(self, model_root: str | Path, port: int = 0, host: str = "127.0.0.1",
                 poll_interval_s: float = 0.5, latency_s: float = 0.0, workers: int = 16,
                 max_message_bytes: int = 64 * 1024 * 1024):
        self.latency_s = latency_s
        self.backend = EmbeddedBackend(BackendSettings(model_root=Path(model_root),
                                                       model_poll_interval_s=poll_interval_s))
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes)]
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_Predictions(self), self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelStatus(self), self._server)
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        self.address = f"{host}:{self.port}"
        self.predict_calls = 0
        self._calls_lock = threading.Lock()

    def count_call(self) -> None:
        with self._calls_lock:
            self.predict_calls += 1

    def start(self) -> PredictionServer:
        self.backend.refresh()  # load (and warm) before accepting calls, as TF Serving does
        self._server.start()
        return self

    def stop(self, grace: float | None = 1.0) -> None:
        self._server.stop(grace).wait()
        self.backend.close()

    def __enter__(self) -> PredictionServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def replay_warmup(address: str, path: str | Path, timeout: float = 30.0) -> list:
    """Send every warmup record of ``path`` to the PredictionService at ``address`` with the
    gateway's own messages.

    Returns the responses; the first failing record raises its ``grpc.RpcError``.
    """
    with grpc.insecure_channel(address) as channel:
        stub = PredictionStub(channel)
        return [stub.predict(request, timeout=timeout) for request in read_warmup_requests(Path(path))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-root", required=True, type=Path)
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--poll-interval", type=float, default=2.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = PredictionServer(args.model_root, port=args.port, host=args.host,
                              poll_interval_s=args.poll_interval).start()
    print(f"PredictionService test double listening on {server.address}", flush=True)
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    server.stop()


if __name__ == "__main__":
    main()
