"""Optional API keys: gRPC metadata ``x-api-key`` and HTTP header ``X-API-Key``.

With no keys configured every caller is accepted; otherwise the key must match one of them.
The check is written once here and the front ends only extract the key.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from scoring.errors import Unauthenticated

GRPC_METADATA_KEY = "x-api-key"
HTTP_HEADER = "X-API-Key"


class ApiKeys:
    """The accepted keys; compared in constant time so timing does not leak them."""

    def __init__(self, keys: Iterable[str] = ()):
        self._keys = [k.encode() for k in keys if k]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, presented: str | None) -> None:
        """Raise ``Unauthenticated`` unless auth is off or ``presented`` is an accepted key."""
        if not self._keys:
            return
        if not presented:
            raise Unauthenticated(f"missing API key: send it as {GRPC_METADATA_KEY!r} metadata or {HTTP_HEADER!r} header")
        candidate = presented.encode()
        if not any(hmac.compare_digest(candidate, key) for key in self._keys):
            raise Unauthenticated("invalid API key")
