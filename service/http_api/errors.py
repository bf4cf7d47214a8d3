"""JSON error bodies ``{"error": {"code", "message"}}`` with the status from ``scoring.errors``,
and the error statuses each route documents in the OpenAPI document."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from scoring.errors import INTERNAL, STATUS, InvalidArgument, ServiceError, quote, status_of
from service.http_api.encoding import SafeJSONResponse
from service.http_api.methods import allowed_methods
from service.http_api.schemas import ErrorBody

log = logging.getLogger(__name__)

# Status codes Starlette raises by itself (unknown route, wrong method, 413 from the body limit).
_CODE_OF_HTTP = {status.http: status.grpc for status in STATUS.values()} | {405: "UNIMPLEMENTED"}

DESCRIPTIONS = {
    400: "The request is invalid (INVALID_ARGUMENT).",
    401: "Missing or wrong API key (UNAUTHENTICATED).",
    403: "The input lies outside the allowed roots (PERMISSION_DENIED).",
    404: "Unknown model, version, version label, job or input (NOT_FOUND).",
    409: "The job is already finished (FAILED_PRECONDITION).",
    413: "Over a size limit: documents, characters or body bytes (RESOURCE_EXHAUSTED).",
    429: "The gateway is overloaded; retry later (RESOURCE_EXHAUSTED).",
    503: "A dependency is unreachable, models are loading, or the gateway is shutting down (UNAVAILABLE).",
    504: "The deadline passed (DEADLINE_EXCEEDED).",
}


def documented(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` for these error statuses, all with the one error body."""
    return {status: {"model": ErrorBody, "description": DESCRIPTIONS[status]} for status in statuses}


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> SafeJSONResponse:
    return SafeJSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def service_error_response(error: ServiceError) -> SafeJSONResponse:
    status = status_of(error)
    return error_response(status.http, status.grpc, error.message)


def _location(parts) -> str:
    shown = [str(p) if isinstance(p, int) or len(str(p)) <= 40 else quote(p, 40) for p in parts if p != "body"]
    return ".".join(shown) or "body"


def _validation_message(exc: RequestValidationError) -> str:
    parts = [f"{_location(err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in exc.errors()[:5]]
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    async def on_service_error(_request: Request, exc: ServiceError) -> SafeJSONResponse:
        return service_error_response(exc)

    async def on_validation_error(_request: Request, exc: RequestValidationError) -> SafeJSONResponse:
        return service_error_response(InvalidArgument(_validation_message(exc)))

    async def on_http_error(request: Request, exc: StarletteHTTPException) -> SafeJSONResponse:
        code = _CODE_OF_HTTP.get(exc.status_code, "UNKNOWN")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.app.router.routes, request.scope))
        return error_response(exc.status_code, code, str(exc.detail), headers or None)

    async def on_unexpected(_request: Request, exc: Exception) -> SafeJSONResponse:
        log.error("unhandled error in HTTP handler", exc_info=exc)
        return error_response(INTERNAL.http, INTERNAL.grpc, "internal error")

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
