"""Scores through TF Serving's gRPC ``PredictionService``; labels and metadata come from the root.

TF Serving answers probabilities and the version that produced them; what those columns mean
(topic names, threshold, metrics) lives beside the SavedModel in the model root, which the
gateway mounts read-only. Every call carries a deadline; only ``UNAVAILABLE`` (the server is
down or restarting) is retried, with exponential backoff, moving to the next address each time.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from scoring.backends.base import Backend, BackendResult, ModelInfo, ModelVersion, check_call
from scoring.backends.tfs_api import (
    GetModelStatusRequest,
    ModelVersionStatus,
    PredictionStub,
    PredictRequest,
    array_of,
    string_tensor,
)
from scoring.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from scoring.settings import BackendSettings
from training.layout import INPUT_KEY, OUTPUT_KEY, SIGNATURE_NAME, ExportMetadata, LayoutError, ModelRoot

log = logging.getLogger(__name__)

AVAILABLE = "AVAILABLE"  # ModelVersionStatus.State name
RECONNECT_BACKOFF_MS = (100, 2000)  # first and longest wait before reconnecting to a down server
READY_TIMEOUT_S = 2.0  # a readiness probe must answer quickly, whatever the request deadline

_ERRORS: dict[grpc.StatusCode, type[ServiceError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}


@dataclass
class _Target:
    address: str
    channel: grpc.Channel
    stub: PredictionStub


def _domain_error(exc: grpc.RpcError, address: str, attempts: int) -> ServiceError:
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT and "version label" in details:
        return NotFound(details)  # TF Serving reports an unknown label as a bad argument
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"TF Serving at {address} unavailable after {attempts} attempt(s): {details}")
    if code in _ERRORS:
        return _ERRORS[code](details or code.name)
    return Unavailable(f"TF Serving at {address} failed with {code.name}: {details}")


class TFServingBackend(Backend):
    """TF Serving over gRPC, round-robin across ``settings.tfserving_addresses``."""

    def __init__(self, settings: BackendSettings):
        if not settings.tfserving_addresses:
            raise ValueError("TFServingBackend needs at least one address")
        self._root = ModelRoot(settings.model_root)
        self._timeout = settings.tfserving_timeout_s
        self._retries = max(0, settings.tfserving_retries)
        self._backoff = settings.tfserving_backoff_s
        options = [("grpc.max_send_message_length", settings.max_message_bytes),
                   ("grpc.max_receive_message_length", settings.max_message_bytes),
                   # gRPC's default reconnect backoff (1 s growing to 120 s) would keep a restarted
                   # TF Serving out of rotation long after it is back.
                   ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
                   ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
                   ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
                   # An address that resolves to several replicas (a headless Kubernetes Service)
                   # gets calls spread over all of them, not pinned to the first.
                   ("grpc.lb_policy_name", "round_robin")]
        self._targets = []
        for address in settings.tfserving_addresses:
            channel = grpc.insecure_channel(address, options=options)
            self._targets.append(_Target(address, channel, PredictionStub(channel)))
        self._turn = itertools.count()
        self._turn_lock = threading.Lock()
        self._metadata: dict[tuple[str, int], ExportMetadata] = {}

    @property
    def addresses(self) -> list[str]:
        return [t.address for t in self._targets]

    def _next_target(self) -> _Target:
        with self._turn_lock:
            return self._targets[next(self._turn) % len(self._targets)]

    def _call(self, rpc: Callable[[_Target, float], Any], timeout: float | None) -> Any:
        """Run ``rpc(target, seconds_left)`` under one deadline, retrying UNAVAILABLE with backoff."""
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        attempts = self._retries + 1
        for attempt in range(1, attempts + 1):
            target = self._next_target()
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(f"deadline passed before TF Serving answered ({attempt - 1} attempt(s))")
            try:
                return rpc(target, left)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts:
                    raise _domain_error(exc, target.address, attempt) from None
                pause = min(self._backoff * 2 ** (attempt - 1), max(0.0, deadline - time.monotonic()))
                log.warning("TF Serving at %s unavailable (%s); retry %d/%d in %.2fs",
                            target.address, exc.details(), attempt, self._retries, pause)
                time.sleep(pause)
        raise AssertionError("unreachable")

    def _metadata_of(self, model: str, version: int) -> ExportMetadata:
        key = (model, version)
        if key not in self._metadata:
            try:
                self._metadata[key] = self._root.read_metadata(model, version)
            except LayoutError as exc:
                raise Unavailable(f"TF Serving answered with {model!r} v{version}, but the model "
                                  f"root has no export metadata for it: {exc}") from None
        return self._metadata[key]

    def classify(self, texts: Sequence[str], model: str, version: int | None = None,
                 version_label: str | None = None, timeout: float | None = None) -> BackendResult:
        check_call(texts, version, version_label)
        request = PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = SIGNATURE_NAME
        if version is not None:
            request.model_spec.version.value = version
        elif version_label is not None:
            request.model_spec.version_label = version_label
        request.inputs[INPUT_KEY].CopyFrom(string_tensor(texts))
        request.output_filter.append(OUTPUT_KEY)
        response = self._call(lambda t, left: t.stub.predict(request, timeout=left), timeout)
        if OUTPUT_KEY not in response.outputs:
            raise Unavailable(f"TF Serving answered without {OUTPUT_KEY!r} for model {model!r}")
        answered = response.model_spec.version.value if response.model_spec.HasField("version") else version
        if answered is None:
            raise Unavailable(f"TF Serving did not say which version of {model!r} answered")
        metadata = self._metadata_of(model, answered)
        probabilities = array_of(response.outputs[OUTPUT_KEY])
        if probabilities.shape != (len(texts), len(metadata.labels)):
            raise Unavailable(f"TF Serving answered shape {probabilities.shape} for {len(texts)} "
                              f"texts and {len(metadata.labels)} labels")
        return BackendResult(model, answered, metadata.labels, probabilities, metadata)

    def _status(self, target: _Target, model: str, timeout: float) -> dict[int, str]:
        request = GetModelStatusRequest()
        request.model_spec.name = model
        response = target.stub.get_model_status(request, timeout=timeout)
        return {s.version: ModelVersionStatus.State.Name(s.state)
                for s in response.model_version_status}

    def _status_anywhere(self, model: str) -> dict[int, str]:
        """Version states from the first address that answers; empty when none does."""
        for target in self._targets:
            try:
                return self._status(target, model, min(READY_TIMEOUT_S, self._timeout))
            except grpc.RpcError as exc:
                log.debug("GetModelStatus(%s) at %s: %s", model, target.address, exc.code())
        return {}

    def models(self) -> list[ModelInfo]:
        infos = []
        for name in self._root.models():
            labels = self._root.version_labels(name)
            states = self._status_anywhere(name)
            on_disk = set(self._root.versions(name))
            wanted = sorted((set(states) | {max(on_disk)} | set(labels.values())) & on_disk)
            versions = [ModelVersion(name, v, self._metadata_of(name, v), states.get(v, "UNKNOWN"))
                        for v in wanted]
            infos.append(ModelInfo(name, versions, labels))
        return infos

    def ready(self, model: str | None = None) -> bool:
        names = [model] if model is not None else self._root.models()
        if not names:
            return False
        return all(AVAILABLE in self._status_anywhere(name).values() for name in names)

    def close(self) -> None:
        for target in self._targets:
            target.channel.close()

