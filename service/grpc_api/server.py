"""Builds the gateway's gRPC server: Classifier, health, reflection, auth, limits, TLS.

Optional job API: when a job manager is given, ``service.grpc_api.jobs.add_to_server(server,
job_manager)`` registers it and returns the full names of the services it added (for reflection).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.auth import ApiKeys
from service.core import ClassifierService
from service.grpc_api.classifier import SERVICE_NAME, ClassifierServicer
from service.grpc_api.health import HealthReporter
from service.grpc_api.interceptors import ApiKeyInterceptor
from service.protos import classifier_pb2_grpc
from service.settings import GatewaySettings

log = logging.getLogger(__name__)


@dataclass
class GrpcServer:
    server: grpc.Server
    port: int
    health: HealthReporter
    servicer: ClassifierServicer
    tls: bool

    def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight ones finish within ``grace_s``."""
        self.health.stop()
        self.server.stop(grace_s).wait()
        self.servicer.close()


def server_credentials(settings: GatewaySettings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None or settings.tls_key is None:  # the settings allow both or neither
        return None
    return grpc.ssl_server_credentials([(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())])


def build_grpc_server(core: ClassifierService, settings: GatewaySettings, job_manager: object | None = None,
                      host: str | None = None, port: int | None = None) -> GrpcServer:
    """Create, bind and start the server; ``port=0`` picks a free port (see ``.port``)."""
    options = [
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(ThreadPoolExecutor(max_workers=settings.grpc_workers, thread_name_prefix="grpc"),
                         interceptors=[ApiKeyInterceptor(ApiKeys(settings.api_keys))], options=options,
                         maximum_concurrent_rpcs=settings.grpc_workers * 4)
    servicer = ClassifierServicer(core)
    classifier_pb2_grpc.add_ClassifierServicer_to_server(servicer, server)
    reporter = HealthReporter(core, settings.model_poll_interval_s)
    health_pb2_grpc.add_HealthServicer_to_server(reporter.servicer, server)
    names = [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME]
    if job_manager is not None:
        from service.grpc_api import jobs
        names += list(jobs.add_to_server(server, job_manager) or [])
    reflection.enable_server_reflection(names, server)

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
