"""The FastAPI application: ``/v1/classify``, ``/v1/models``, health, readiness and metrics.

Handlers are plain ``def`` functions: the core blocks on the micro-batcher, so they run in the
server's thread pool while the event loop keeps accepting requests.

The OpenAPI document is exact: each route lists the error statuses it can send and no other
(no 422: validation errors are 400), and API-key security appears only when keys are set. The
interactive docs (``/docs``, ``/redoc``) load their scripts from the gateway itself, so they work
offline.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Security
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline

from jobs.manager import JobManager
from scoring.errors import Unavailable
from service.auth import HTTP_HEADER, ApiKeys
from service.core import ClassifierService, ClassifyRequest, ClassifyResult, Document, ModelStatus
from service.draining import SHUTTING_DOWN, Drain
from service.http_api import jobs
from service.http_api.draining import DrainMiddleware
from service.http_api.encoding import SafeJSONResponse, UnicodeJSONRoute
from service.http_api.errors import documented, install_error_handlers, service_error_response
from service.http_api.limits import BodyLimitMiddleware
from service.http_api.methods import OptionsMiddleware
from service.http_api.schemas import ClassifyBody, ClassifyOut, HealthOut, ModelOut, ModelsOut, ModelVersionOut
from service.settings import GatewaySettings

TIMEOUT_HEADER = "X-Request-Timeout-Ms"
TimeoutMs = Annotated[float | None, Header(alias=TIMEOUT_HEADER, gt=0, allow_inf_nan=False,
                                           description="Deadline for this request in milliseconds (> 0).")]


def result_to_json(result: ClassifyResult) -> SafeJSONResponse:
    """The ``ClassifyOut`` shape, serialised directly: this is the hot path, and the core's
    dataclasses are already validated, so a second pydantic pass would only cost time."""
    return SafeJSONResponse({
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


def create_app(core: ClassifierService, settings: GatewaySettings, job_manager: JobManager | None = None,
               drain: Drain | None = None) -> FastAPI:
    """Build the app; with a job manager, ``service.http_api.jobs.router(job_manager)`` is mounted too."""
    drain = drain or Drain()
    app = FastAPIOffline(title="newsclf gateway", version="1", default_response_class=SafeJSONResponse,
                         description="Topic classification of Reuters-style newswire text (46 topics).")
    app.router.route_class = UnicodeJSONRoute
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(DrainMiddleware, drain=drain)
    app.add_middleware(OptionsMiddleware, routes=app.router.routes)
    keys = ApiKeys(settings.api_keys)
    key_header = APIKeyHeader(name=HTTP_HEADER, auto_error=False, description="Needed when the gateway has API keys.")

    def require_key(key: str | None = Security(key_header)) -> None:
        keys.check(key)

    # Without keys there is no key check: no 401 and no security scheme in the document.
    auth = [Depends(require_key)] if keys.enabled else []
    api_errors = documented(*([401] if keys.enabled else []), 503)  # 503: dependencies, loading, shutdown
    v1 = APIRouter(prefix="/v1", dependencies=auth, responses=api_errors, route_class=UnicodeJSONRoute)

    @v1.post("/classify", response_model=ClassifyOut, summary="Classify one or more documents",
             responses=documented(400, 404, 413, 429, 504))
    def classify(body: ClassifyBody, timeout_ms: TimeoutMs = None):
        request = ClassifyRequest(documents=[Document(d.text, d.id) for d in body.documents], model=body.model,
                                  version=body.version, version_label=body.version_label, top_k=body.top_k)
        timeout = None if timeout_ms is None else timeout_ms / 1000.0
        return result_to_json(core.classify(request, timeout=timeout, transport="http", method="classify"))

    @v1.get("/models", response_model=ModelsOut, summary="Models, versions, labels, status and metrics")
    def models():
        return ModelsOut(models=[model_to_json(m) for m in core.list_models()])

    app.include_router(v1)
    if job_manager is not None:
        app.include_router(jobs.router(job_manager), dependencies=auth, responses=api_errors)

    @app.get("/healthz", response_model=HealthOut, summary="Liveness: the process answers")
    def healthz():
        return HealthOut(status="ok")

    @app.get("/readyz", response_model=HealthOut, responses=documented(503),
             summary="Readiness: every model is loaded and can answer, and the gateway is not shutting down")
    def readyz():
        if not drain.serving:
            return service_error_response(Unavailable(SHUTTING_DOWN))
        ready, models = core.readiness()
        if not ready:
            not_ready = sorted(name for name, ok in models.items() if not ok)
            detail = f"models not ready: {', '.join(not_ready)}" if not_ready else "no model is loaded"
            return service_error_response(Unavailable(detail))
        return HealthOut(status="ready", models=models)

    metrics_auth = auth if settings.metrics_auth else []

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response, dependencies=metrics_auth,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics"},
                        **documented(*([401] if metrics_auth else []))})
    def metrics():
        body, content_type = core.metrics.exposition()
        return Response(body, media_type=content_type)

    app.openapi = lambda: exact_openapi(app)
    return app


def exact_openapi(app: FastAPI) -> dict:
    """FastAPI's document without the 422 answers it adds to every route with parameters: this
    gateway answers validation errors with 400, which each route lists."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        schemas = document.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = document
    return app.openapi_schema
