"""The HTTP side of ``service.draining``: from the start of the drain every answer closes its
connection (keep-alive clients reconnect, to another instance once the load balancer knows), and
once new calls are refused, API calls get 503 while those in flight are counted until they end."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scoring.errors import Unavailable
from service.draining import SHUTTING_DOWN, Drain
from service.http_api.errors import service_error_response

API_PREFIX = "/v1/"


class DrainMiddleware:
    def __init__(self, app: ASGIApp, drain: Drain):
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        answer = send if self.drain.serving else send_closing
        if not scope["path"].startswith(API_PREFIX):  # probes, metrics and docs answer to the end
            await self.app(scope, receive, answer)
            return
        if not self.drain.enter():
            await service_error_response(Unavailable(SHUTTING_DOWN))(scope, receive, send_closing)
            return
        try:
            await self.app(scope, receive, answer)
        finally:
            self.drain.leave()
