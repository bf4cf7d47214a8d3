"""Turns domain errors into gRPC status for every servicer (Classifier, Jobs)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import grpc

from scoring.errors import ServiceError, status_of

log = logging.getLogger(__name__)


def grpc_code(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code of an error, from the one status table."""
    return grpc.StatusCode[status_of(error).grpc]


@contextlib.contextmanager
def grpc_errors(context: grpc.ServicerContext) -> Iterator[None]:
    """Abort the call with the status of a ``ServiceError``; hide anything else as INTERNAL."""
    try:
        yield
    except ServiceError as exc:
        context.abort(grpc_code(exc), exc.message)
    except Exception:
        log.exception("unhandled error in gRPC method")
        context.abort(grpc.StatusCode.INTERNAL, "internal error")
