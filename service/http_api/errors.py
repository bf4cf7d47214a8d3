"""JSON error bodies ``{"error": {"code", "message"}}`` with the status from ``service.errors``."""

from __future__ import annotations

import logging

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import STATUS, InvalidArgument, ServiceError, status_of

log = logging.getLogger(__name__)

# Status codes Starlette raises by itself (unknown route, wrong method, 413 from the body limit).
_CODE_OF_HTTP = {http: code.name for code, http in STATUS.values()} | {405: grpc.StatusCode.UNIMPLEMENTED.name}


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def service_error_response(error: ServiceError) -> JSONResponse:
    code, status = status_of(error)
    return error_response(status, code.name, error.message)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        location = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{location}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    async def on_service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        return service_error_response(exc)

    async def on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return service_error_response(InvalidArgument(_validation_message(exc)))

    async def on_http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODE_OF_HTTP.get(exc.status_code, grpc.StatusCode.UNKNOWN.name)
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    async def on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error in HTTP handler", exc_info=exc)
        return error_response(500, grpc.StatusCode.INTERNAL.name, "internal error")

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
