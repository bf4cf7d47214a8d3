"""Turns domain errors into gRPC status for every servicer (Classifier, Jobs)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import grpc

from service.errors import ServiceError, status_of

log = logging.getLogger(__name__)


@contextlib.contextmanager
def grpc_errors(context: grpc.ServicerContext) -> Iterator[None]:
    """Abort the call with the status of a ``ServiceError``; hide anything else as INTERNAL."""
    try:
        yield
    except ServiceError as exc:
        context.abort(status_of(exc)[0], exc.message)
    except Exception:
        log.exception("unhandled error in gRPC method")
        context.abort(grpc.StatusCode.INTERNAL, "internal error")
