"""Builds the gateway's gRPC server: Classifier, health, reflection, auth, limits, TLS.

The API services (Classifier, and Jobs when a job manager is given) are registered through
``service.grpc_api.methods``, which parses requests itself and applies the drain gate.
"""

from __future__ import annotations

import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from jobs.manager import JobManager
from service.auth import ApiKeys
from service.core import ClassifierService
from service.draining import Drain
from service.grpc_api import jobs
from service.grpc_api.classifier import SERVICE, ClassifierServicer
from service.grpc_api.health import HealthReporter
from service.grpc_api.interceptors import ApiKeyInterceptor
from service.grpc_api.methods import Registrar
from service.settings import GatewaySettings

log = logging.getLogger(__name__)

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


@dataclass
class GrpcServer:
    server: grpc.Server
    port: int
    health: HealthReporter
    servicer: ClassifierServicer
    tls: bool

    def drain(self) -> None:
        """Report NOT_SERVING everywhere; calls are still served."""
        self.health.stop()

    def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING, close the port, let in-flight calls finish within ``grace_s``."""
        self.health.stop()
        self.server.stop(grace_s).wait()
        self.servicer.close()


def enable_reflection(names: list[str], server: grpc.Server) -> None:
    """Server reflection as ``grpc.reflection.v1alpha`` (grpcio-reflection) and ``grpc.reflection.v1``.

    grpcio-reflection ships only v1alpha; v1 differs from it only in the package name, so the
    same servicer with v1alpha's messages answers v1 clients byte for byte.
    """
    reflection.enable_server_reflection(names, server)
    servicer = reflection.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo, request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1,
                                                                          {"ServerReflectionInfo": handler}),))


def server_credentials(settings: GatewaySettings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None or settings.tls_key is None:  # the settings allow both or neither
        return None
    return grpc.ssl_server_credentials([(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())])


def check_port_free(host: str, port: int) -> None:
    """Raise ``OSError`` when something listens on ``host:port`` already.

    A port shared with SO_REUSEPORT would otherwise be shared with any other process that set
    it too, such as a second gateway started by mistake.
    """
    if port == 0:
        return
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM):
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc binds: TIME_WAIT holds nothing
                probe.bind(address)
    except OSError:
        raise OSError(f"gRPC cannot listen on {host}:{port}: address in use or not available") from None


def build_grpc_server(core: ClassifierService, settings: GatewaySettings, job_manager: JobManager | None = None,
                      host: str | None = None, port: int | None = None, drain: Drain | None = None,
                      share_port: bool = False) -> GrpcServer:
    """Create, bind and start the server; ``port=0`` picks a free port (see ``.port``).

    With ``share_port``, other processes of this gateway can bind the same port
    (``service.processes``); without it the port must be free.
    """
    options = [
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", int(share_port)),
    ]
    server = grpc.server(ThreadPoolExecutor(max_workers=settings.grpc_workers, thread_name_prefix="grpc"),
                         interceptors=[ApiKeyInterceptor(ApiKeys(settings.api_keys))], options=options,
                         maximum_concurrent_rpcs=settings.grpc_workers * 4)
    servicer = ClassifierServicer(core)
    registrar = Registrar(server, drain or Drain())
    names = [registrar.add(servicer, SERVICE), health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1]
    if job_manager is not None:
        names.append(registrar.add(jobs.JobsServicer(job_manager), jobs.SERVICE))
    reporter = HealthReporter(core, settings.model_poll_interval_s)
    health_pb2_grpc.add_HealthServicer_to_server(reporter.servicer, server)
    enable_reflection(names, server)

    address = f"{host if host is not None else settings.host}:{settings.grpc_port if port is None else port}"
    credentials = server_credentials(settings)
    try:
        bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:  # grpc says only "failed to bind"; in use or not an address of this host
        servicer.close()
        raise OSError(f"gRPC cannot listen on {address}: address in use or not available") from None
    reporter.start()
    server.start()
    log.info("gRPC listening on %s (port %d, tls=%s)", address, bound, credentials is not None)
    return GrpcServer(server, bound, reporter, servicer, credentials is not None)
