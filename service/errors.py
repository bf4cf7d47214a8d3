"""Domain errors and the one table that maps them to gRPC and HTTP status.

Every layer raises these; only the front ends translate them, through ``STATUS``.
"""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """Base of every error a client may see; ``message`` is safe to show."""

    def __init__(self, message: str):
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


STATUS: dict[type[ServiceError], tuple[grpc.StatusCode, int]] = {
    InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, 400),
    Unauthenticated: (grpc.StatusCode.UNAUTHENTICATED, 401),
    PermissionDenied: (grpc.StatusCode.PERMISSION_DENIED, 403),
    NotFound: (grpc.StatusCode.NOT_FOUND, 404),
    FailedPrecondition: (grpc.StatusCode.FAILED_PRECONDITION, 409),
    ResourceExhausted: (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    PayloadTooLarge: (grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
    Unavailable: (grpc.StatusCode.UNAVAILABLE, 503),
    DeadlineExceeded: (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
}


def status_of(error: ServiceError) -> tuple[grpc.StatusCode, int]:
    """gRPC code and HTTP status for a domain error (its nearest mapped ancestor)."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL, 500
