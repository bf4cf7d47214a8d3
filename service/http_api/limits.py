"""Refuses request bodies over ``max_request_bytes`` with 413 before they are buffered whole."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scoring.errors import PayloadTooLarge, status_of
from service.http_api.errors import service_error_response

BODY_METHODS = ("POST", "PUT", "PATCH")


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``; FastAPI passes HTTPExceptions through body parsing untouched."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body is larger than the limit of {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:  # other bodies are never read
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = self._error()
            await service_error_response(error)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(status_of(self._error()).http, self._error().message)
            return message

        await self.app(scope, limited_receive, send)
