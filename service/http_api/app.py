"""The FastAPI application: ``/v1/classify``, ``/v1/models``, health, readiness and metrics.

Handlers are plain ``def`` functions: the core blocks on the micro-batcher, so they run in the
server's thread pool while the event loop keeps accepting requests.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Header, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader

from service.auth import HTTP_HEADER, ApiKeys
from service.core import ClassifierService, ClassifyRequest, ClassifyResult, Document, ModelStatus
from service.errors import Unavailable
from service.http_api.errors import install_error_handlers, service_error_response
from service.http_api.limits import BodyLimitMiddleware
from service.http_api.schemas import ClassifyBody, ClassifyOut, ErrorBody, HealthOut, ModelOut, ModelsOut, ModelVersionOut
from service.settings import GatewaySettings

TIMEOUT_HEADER = "X-Request-Timeout-Ms"
ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 404, 413, 429, 503, 504)}


def result_to_json(result: ClassifyResult) -> JSONResponse:
    """The ``ClassifyOut`` shape, serialised directly: this is the hot path, and the core's
    dataclasses are already validated, so a second pydantic pass would only cost time."""
    return JSONResponse({
        "model": result.model, "version": result.version, "abstain_threshold": result.abstain_threshold,
        "results": [{"id": r.id, "abstained": r.abstained,
                     "topics": [{"name": t.name, "probability": t.probability} for t in r.topics]}
                    for r in result.results]})


def model_to_json(status: ModelStatus) -> ModelOut:
    return ModelOut(name=status.info.name, version_labels=status.info.version_labels, ready=status.ready,
                    versions=[ModelVersionOut(version=v.version, state=v.state, metrics=v.metadata.metrics,
                                              labels=v.metadata.labels, variant=v.metadata.variant,
                                              abstain_threshold=v.metadata.threshold.value
                                              if v.metadata.threshold else None)
                              for v in status.info.versions])


def create_app(core: ClassifierService, settings: GatewaySettings, job_manager: object | None = None) -> FastAPI:
    """Build the app; with a job manager, ``service.http_api.jobs.router(job_manager)`` is mounted too."""
    app = FastAPI(title="newsclf gateway", version="1",
                  description="Topic classification of Reuters-style newswire text (46 topics).")
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    keys = ApiKeys(settings.api_keys)
    key_header = APIKeyHeader(name=HTTP_HEADER, auto_error=False, description="Needed when the gateway has API keys.")

    def require_key(key: str | None = Security(key_header)) -> None:
        keys.check(key)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)], responses=ERRORS)

    @v1.post("/classify", response_model=ClassifyOut, summary="Classify one or more documents")
    def classify(body: ClassifyBody,
                 timeout_ms: float | None = Header(None, alias=TIMEOUT_HEADER,
                                                   description="Deadline for this request in milliseconds.")):
        request = ClassifyRequest(documents=[Document(d.text, d.id) for d in body.documents], model=body.model,
                                  version=body.version, version_label=body.version_label, top_k=body.top_k)
        timeout = None if timeout_ms is None else timeout_ms / 1000.0
        return result_to_json(core.classify(request, timeout=timeout, transport="http", method="classify"))

    @v1.get("/models", response_model=ModelsOut, summary="Models, versions, labels, status and metrics")
    def models():
        return ModelsOut(models=[model_to_json(m) for m in core.list_models()])

    app.include_router(v1)
    if job_manager is not None:
        from service.http_api import jobs
        app.include_router(jobs.router(job_manager), dependencies=[Depends(require_key)], responses=ERRORS)

    @app.get("/healthz", response_model=HealthOut, summary="Liveness: the process answers")
    def healthz():
        return HealthOut(status="ok")

    @app.get("/readyz", response_model=HealthOut, responses={503: {"model": ErrorBody}},
             summary="Readiness: every model is loaded and can answer")
    def readyz():
        ready, models = core.readiness()
        if not ready:
            not_ready = sorted(name for name, ok in models.items() if not ok)
            detail = f"models not ready: {', '.join(not_ready)}" if not_ready else "no model is loaded"
            return service_error_response(Unavailable(detail))
        return HealthOut(status="ready", models=models)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics():
        body, content_type = core.metrics.exposition()
        return Response(body, media_type=content_type)

    return app


