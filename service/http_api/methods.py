"""``OPTIONS`` and the ``Allow`` header: every method the path serves, across all its routes.

Starlette answers a wrong method with only the methods of the first route whose path matches,
and has no ``OPTIONS``; ``/v1/jobs/{id}`` alone has a GET and a DELETE route.
"""

from __future__ import annotations

from fastapi.responses import Response
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

CANDIDATES = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def allowed_methods(routes: list[BaseRoute], scope: Scope) -> list[str]:
    """The methods some route serves at the scope's path (with OPTIONS), or [] for no such path."""
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Mount):  # the docs' static files
            if route.matches(scope)[0] is not Match.NONE:
                methods |= {"GET", "HEAD"}
            continue
        methods |= {method for method in CANDIDATES
                    if route.matches({**scope, "method": method})[0] is Match.FULL}
    return sorted(methods | {"OPTIONS"}) if methods else []


class OptionsMiddleware:
    """Answers ``OPTIONS`` on any served path with 204 and the complete ``Allow`` header."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]):
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            allowed = allowed_methods(self.routes, scope)
            if allowed:
                await Response(status_code=204, headers={"Allow": ", ".join(allowed)})(scope, receive, send)
                return
        await self.app(scope, receive, send)
