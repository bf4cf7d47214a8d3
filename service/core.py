"""The gateway's one classification core; the gRPC and HTTP front ends only translate to it.

Validation, limits, deadlines, routing to model + version, top-k and abstain are decided here,
so both transports behave identically and raise the same ``scoring.errors`` exceptions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from scoring.backends.base import Backend, BackendResult, ModelInfo
from scoring.errors import DeadlineExceeded, InvalidArgument, PayloadTooLarge, ServiceError, status_of
from scoring.ranking import rank, topic_rows
from service.batching import MicroBatcher
from service.metrics import Metrics
from service.settings import GatewaySettings
from training.layout import LayoutError, check_model_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Document:
    text: str
    id: str = ""


@dataclass(frozen=True)
class ClassifyRequest:
    documents: Sequence[Document]
    model: str
    version: int | None = None
    version_label: str | None = None
    top_k: int | None = None  # None or 0: the gateway's default


@dataclass(frozen=True)
class Topic:
    name: str
    probability: float


@dataclass(frozen=True)
class DocumentResult:
    id: str
    topics: list[Topic]
    abstained: bool


@dataclass(frozen=True)
class ClassifyResult:
    model: str
    version: int
    results: list[DocumentResult]
    abstain_threshold: float | None


@dataclass(frozen=True)
class ModelStatus:
    info: ModelInfo
    ready: bool


class ClassifierService:
    """Validates requests, batches them to the backend and shapes the answers."""

    def __init__(self, backend: Backend, settings: GatewaySettings, metrics: Metrics | None = None):
        self.backend = backend
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._answered_models: set[str] = set()  # names safe to use as metric labels
        self.batcher = MicroBatcher(backend, max_size=settings.batch_max_size,
                                    max_delay_s=settings.batch_max_delay_ms / 1000.0,
                                    max_queued=settings.max_queued_documents,
                                    concurrency=settings.batch_concurrency, metrics=self.metrics,
                                    split_call_cost=settings.batch_split_call_cost,
                                    split_step_cost=settings.batch_split_step_cost,
                                    length_classes=settings.batch_length_classes)

    def classify(self, request: ClassifyRequest, timeout: float | None = None,
                 transport: str = "inproc", method: str = "classify") -> ClassifyResult:
        """Answer ``request`` within ``timeout`` seconds (capped by ``request_timeout_s``)."""
        started = time.monotonic()
        status, model_label, version_tag = "OK", request.model, ""
        try:
            top_k = self._validate(request)
            budget = self.settings.request_timeout_s if timeout is None else min(timeout, self.settings.request_timeout_s)
            if budget <= 0:
                raise DeadlineExceeded("deadline exceeded before the request was scored")
            texts = [doc.text for doc in request.documents]
            backend_result = self.batcher.submit(texts, request.model, request.version, request.version_label,
                                                 deadline=started + budget)
            result = self._shape(request, backend_result, top_k)
            version_tag = str(result.version)
            self.metrics.documents.labels(result.model, version_tag).inc(len(result.results))
            abstained = sum(r.abstained for r in result.results)
            if abstained:
                self.metrics.abstained.labels(result.model, version_tag).inc(abstained)
            return result
        except ServiceError as exc:
            status = status_of(exc).grpc
            raise
        except Exception:
            status = "INTERNAL"
            log.exception("classification failed")
            raise
        finally:
            if status == "OK":
                self._answered_models.add(model_label)
            elif model_label not in self._answered_models:
                model_label = ""  # client-chosen names must not grow the metrics' label sets
            self.metrics.requests.labels(transport, method, model_label, version_tag, status).inc()
            self.metrics.latency.labels(transport, method, model_label).observe(time.monotonic() - started)

    def list_models(self) -> list[ModelStatus]:
        return [ModelStatus(info, self.ready(info.name)) for info in self.backend.models()]

    def readiness(self) -> tuple[bool, dict[str, bool]]:
        """(ready overall, ready per model); ready overall needs at least one model."""
        try:
            models = {status.info.name: status.ready for status in self.list_models()}
        except Exception:
            log.warning("listing models failed", exc_info=True)
            models = {}
        return bool(models) and all(models.values()) and self.ready(), models

    def ready(self, model: str | None = None) -> bool:
        """True when the backend can answer for ``model`` (or every model); never raises."""
        try:
            return bool(self.backend.ready(model))
        except Exception:
            log.warning("readiness check failed", exc_info=True)
            return False

    def close(self) -> None:
        """Finish queued work and stop batching; the backend is closed by its owner."""
        self.batcher.close(timeout=self.settings.shutdown_grace_s)

    # -- helpers -------------------------------------------------------------------------
    def _validate(self, request: ClassifyRequest) -> int:
        s = self.settings
        if not request.model:
            raise InvalidArgument("model is required, e.g. 'rnn', 'lstm', 'gru', 'bilstm' or 'ensemble'")
        try:
            check_model_name(request.model)
        except LayoutError as exc:
            raise InvalidArgument(str(exc)) from None
        if request.version is not None and request.version_label:
            raise InvalidArgument("give either version or version_label, not both")
        if request.version is not None and request.version < 1:
            raise InvalidArgument(f"version must be a positive integer, got {request.version}")
        try:
            top_k = s.top_k(request.top_k)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        documents = request.documents
        if not documents:
            raise InvalidArgument("documents: at least one document is required")
        if len(documents) > s.max_documents:
            raise PayloadTooLarge(f"documents: {len(documents)} in one request; the limit is {s.max_documents}")
        for i, doc in enumerate(documents):
            if not isinstance(doc.text, str) or not doc.text.strip():
                raise InvalidArgument(f"documents[{i}].text is empty or whitespace only")
            if len(doc.text) > s.max_chars:
                raise PayloadTooLarge(f"documents[{i}].text has {len(doc.text)} characters; the limit is {s.max_chars}")
            try:
                doc.text.encode("utf-8")  # JSON's "\ud800" escapes give strings no model input can hold
            except UnicodeEncodeError as exc:
                raise InvalidArgument(f"documents[{i}].text is not valid Unicode: a lone surrogate at "
                                      f"character {exc.start}") from None
        return top_k

    @staticmethod
    def _shape(request: ClassifyRequest, result: BackendResult, top_k: int) -> ClassifyResult:
        threshold = result.metadata.threshold.value if result.metadata.threshold else None
        ranking = rank(result.probabilities, top_k, threshold)
        results = [DocumentResult(doc.id, [Topic(name, p) for name, p in topics], bool(abstained))
                   for doc, topics, abstained in zip(request.documents, topic_rows(ranking, result.labels),
                                                     ranking.abstained.tolist())]
        return ClassifyResult(result.model, result.version, results, threshold)
