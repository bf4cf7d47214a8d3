"""Server interceptor enforcing the optional API key on every method except health and reflection.

Probes carry no keys, and reflection only describes the public API (the .proto files).
"""

from __future__ import annotations

import grpc

from scoring.errors import Unauthenticated
from service.auth import GRPC_METADATA_KEY, ApiKeys
from service.grpc_api.errors import grpc_code

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _rejecting(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that only aborts with UNAUTHENTICATED."""
    code = grpc_code(Unauthenticated(message))

    def abort(_request, context):
        context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class ApiKeyInterceptor(grpc.ServerInterceptor):
    def __init__(self, keys: ApiKeys):
        self.keys = keys

    def intercept_service(self, continuation, handler_call_details):
        if not self.keys.enabled or handler_call_details.method.startswith(OPEN_PREFIXES):
            return continuation(handler_call_details)
        presented = next((value for key, value in handler_call_details.invocation_metadata or ()
                          if key == GRPC_METADATA_KEY), None)
        try:
            self.keys.check(presented if isinstance(presented, str) else None)
        except Unauthenticated as exc:
            handler = continuation(handler_call_details)
            return None if handler is None else _rejecting(handler, exc.message)
        return continuation(handler_call_details)
