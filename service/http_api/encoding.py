"""JSON in and out that holds only Unicode text.

JSON may escape half of a UTF-16 surrogate pair (``"\\ud800"``); Python's parser turns it into a
string that has no UTF-8 form, so it would fail later wherever it is written: in a response, a
log, Redis or a file path. Request bodies holding one are refused with 400 naming the field, and
responses are rendered so that no string can make them fail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from scoring.errors import InvalidArgument, status_of

# A \uD800-\uDFFF escape in the raw body: only then can a parsed string hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def lone_surrogate(value: Any, where: str = "body") -> InvalidArgument | None:
    """The error for the first string (key or value) in ``value`` that is not Unicode text."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return InvalidArgument(f"{where} is not valid Unicode: a lone surrogate at character {exc.start}")
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            error = lone_surrogate(key, f"a key in {where}") or lone_surrogate(item, _join(where, key))
            if error:
                return error
    elif isinstance(value, list):
        for index, item in enumerate(value):
            error = lone_surrogate(item, f"{where}[{index}]")
            if error:
                return error
    return None


def _join(where: str, key: str) -> str:
    return key if where == "body" else f"{where}.{key}"


class BodyNotUnicode(HTTPException):
    """Raised while parsing; FastAPI passes HTTPExceptions through body parsing untouched."""


class _UnicodeRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            value = json.loads(body)
            if _SURROGATE_ESCAPE.search(body):
                error = lone_surrogate(value)
                if error:
                    raise BodyNotUnicode(status_of(error).http, error.message)
            self._json = value
        return self._json


class UnicodeJSONRoute(APIRoute):
    """A route whose JSON body must be Unicode text throughout."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def unicode_handler(request: Request):
            return await handler(_UnicodeRequest(request.scope, request.receive))

        return unicode_handler


class SafeJSONResponse(JSONResponse):
    """UTF-8 JSON; a string that has no UTF-8 form is written as JSON escapes instead of failing."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, indent=None,
                              separators=(",", ":")).encode("ascii")
