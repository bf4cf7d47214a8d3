"""Domain errors and the one table that maps them to gRPC and HTTP status.

Every layer raises these; only the front ends translate them, through ``status_of``. The table
names gRPC codes by their name, so the layers below the gateway never import grpc.
"""

from __future__ import annotations

from typing import NamedTuple

QUOTE_CHARS = 80
MESSAGE_CHARS = 1000


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """Client input as it may appear in an error message: its ``repr``, cut after ``limit``
    characters. Messages travel in gRPC trailers (a few KiB at most), JSON bodies and logs, so a
    10,000-character name from a client must not travel with them."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def _bounded(message: str) -> str:
    """At most ``MESSAGE_CHARS`` characters, and always encodable as UTF-8 (no lone surrogates)."""
    if len(message) > MESSAGE_CHARS:
        message = f"{message[:MESSAGE_CHARS]}... ({len(message)} characters)"
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


class ServiceError(Exception):
    """Base of every error a client may see; ``message`` is safe to show, bounded in length and
    encodable, whatever input was quoted into it."""

    def __init__(self, message: str):
        message = _bounded(str(message))
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    """The request itself is wrong (empty text, bad top_k, unknown format)."""


class NotFound(ServiceError):
    """Unknown model, version, version label or job."""


class PermissionDenied(ServiceError):
    """A path outside the allowed roots, or an archive entry escaping its folder."""


class Unauthenticated(ServiceError):
    """Missing or wrong API key."""


class ResourceExhausted(ServiceError):
    """Over a size limit or the gateway is overloaded; retry later or send less."""


class PayloadTooLarge(ResourceExhausted):
    """The request is over a size limit (documents, characters, bytes): send less, not later."""


class Unavailable(ServiceError):
    """A dependency (model backend, Redis) cannot be reached or is not ready."""


class DeadlineExceeded(ServiceError):
    """The request ran out of time."""


class FailedPrecondition(ServiceError):
    """The operation does not fit the current state (e.g. cancelling a finished job)."""


class Status(NamedTuple):
    """How one error is answered: a gRPC status code name and an HTTP status."""

    grpc: str
    http: int


STATUS: dict[type[ServiceError], Status] = {
    InvalidArgument: Status("INVALID_ARGUMENT", 400),
    Unauthenticated: Status("UNAUTHENTICATED", 401),
    PermissionDenied: Status("PERMISSION_DENIED", 403),
    NotFound: Status("NOT_FOUND", 404),
    FailedPrecondition: Status("FAILED_PRECONDITION", 409),
    ResourceExhausted: Status("RESOURCE_EXHAUSTED", 429),
    PayloadTooLarge: Status("RESOURCE_EXHAUSTED", 413),
    Unavailable: Status("UNAVAILABLE", 503),
    DeadlineExceeded: Status("DEADLINE_EXCEEDED", 504),
}

INTERNAL = Status("INTERNAL", 500)


def status_of(error: BaseException) -> Status:
    """The status of an error: its nearest mapped ancestor's, INTERNAL for anything else."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return INTERNAL
