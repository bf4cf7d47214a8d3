"""Registers the gateway's gRPC services with bytes-in handlers that parse each request here.

grpcio's own deserialisation fails outside any handler: an undecodable message (random bytes,
a wrong wire type, invalid UTF-8 in a string field) becomes INTERNAL with a logged traceback, and
on a stream it ends the whole call. Parsing inside the handler makes it INVALID_ARGUMENT with a
rate-limited one-line warning, and on a request stream only the bad message gets an error
answer. Every call also passes the drain gate (``service.draining``) here: refused with
UNAVAILABLE once the gateway refuses new calls, counted while in flight otherwise.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from scoring.errors import InvalidArgument, Unavailable
from service.draining import SHUTTING_DOWN, Drain
from service.grpc_api.errors import grpc_code

log = logging.getLogger(__name__)


class RateLimitedWarning:
    """Logs at most one warning per ``interval_s``, counting the ones it held back, so a client
    sending garbage cannot fill the disk with the gateway's log."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0):
        self.logger = logger
        self.interval_s = interval_s
        self._next = 0.0
        self._held = 0
        self._lock = threading.Lock()

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._held += 1
                return
            held, self._held, self._next = self._held, 0, now + self.interval_s
        suffix = f" ({held} more since the last such warning)" if held else ""
        self.logger.warning("%s%s", message, suffix)


class Registrar:
    """Adds services to one server; all of them share the drain gate and the warning limit."""

    def __init__(self, server: grpc.Server, drain: Drain, warn: RateLimitedWarning | None = None):
        self.server = server
        self.drain = drain
        self.warn = warn or RateLimitedWarning(log)

    def add(self, servicer: object, service: ServiceDescriptor) -> str:
        """Serve every method of ``service`` from ``servicer``; returns the service's full name."""
        handlers = {method.name: self._handler(servicer, method) for method in service.methods}
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
        return service.full_name

    def _handler(self, servicer: object, method: MethodDescriptor) -> grpc.RpcMethodHandler:
        request_type = message_factory.GetMessageClass(method.input_type)
        serialize = message_factory.GetMessageClass(method.output_type).SerializeToString
        behaviour = getattr(servicer, method.name)
        if method.client_streaming and method.server_streaming:
            def stream_stream(request_iterator, context):
                self._admit(context)
                yield from behaviour(self._decode_each(request_iterator, request_type, method, context), context)
            return grpc.stream_stream_rpc_method_handler(stream_stream, response_serializer=serialize)
        if method.client_streaming or method.server_streaming:
            raise ValueError(f"{method.full_name}: only unary and bidirectional methods are served")

        def unary_unary(data: bytes, context):
            self._admit(context)
            request = self._decode(data, request_type, method, context)
            if isinstance(request, InvalidArgument):
                context.abort(grpc_code(request), request.message)
            return behaviour(request, context)
        return grpc.unary_unary_rpc_method_handler(unary_unary, response_serializer=serialize)

    def _admit(self, context: grpc.ServicerContext) -> None:
        """Refuse the call once shutting down; otherwise count it until it ends, however it ends."""
        if not self.drain.enter():
            context.abort(grpc_code(Unavailable(SHUTTING_DOWN)), SHUTTING_DOWN)
        if not context.add_callback(self.drain.leave):
            self.drain.leave()  # the call already ended

    def _decode(self, data: bytes, request_type: type[Message], method: MethodDescriptor,
                context: grpc.ServicerContext) -> Message | InvalidArgument:
        """The parsed request, or the error to answer it with."""
        try:
            return request_type.FromString(data)
        except DecodeError as exc:
            self.warn(f"undecodable {method.full_name} request from {context.peer()}: {exc}")
            return InvalidArgument(f"the request is not a valid {method.input_type.full_name} message "
                                   "(malformed protobuf, or a string field that is not UTF-8)")

    def _decode_each(self, request_iterator: Iterator[bytes], request_type: type[Message],
                     method: MethodDescriptor, context: grpc.ServicerContext) -> Iterator[Message | InvalidArgument]:
        for data in request_iterator:
            yield self._decode(data, request_type, method, context)
