"""One gateway: the core plus its gRPC and HTTP front ends, started and stopped together."""

from __future__ import annotations

import logging
import threading

from service.backends.base import Backend
from service.core import ClassifierService
from service.grpc_api.server import build_grpc_server
from service.http_api.app import create_app
from service.http_api.server import HttpServer
from service.metrics import Metrics
from service.settings import GatewaySettings

log = logging.getLogger(__name__)


class Gateway:
    """Serves ``backend`` over gRPC and HTTP; ports of 0 pick free ones (``grpc_port``, ``http_port``)."""

    def __init__(self, backend: Backend, settings: GatewaySettings, job_manager: object | None = None,
                 host: str | None = None, grpc_port: int | None = None, http_port: int | None = None):
        self.settings = settings
        self.core = ClassifierService(backend, settings, Metrics())
        self.grpc = None
        try:
            self.grpc = build_grpc_server(self.core, settings, job_manager, host=host, port=grpc_port)
            self.http = HttpServer(create_app(self.core, settings, job_manager), settings,
                                   host=host, port=http_port).start()
        except Exception:
            if self.grpc is not None:
                self.grpc.stop(0)
            self.core.close()
            raise

    @property
    def grpc_port(self) -> int:
        return self.grpc.port

    @property
    def http_port(self) -> int:
        return self.http.port

    def stop(self, grace_s: float | None = None) -> None:
        """Refuse new requests on both front ends, finish in-flight ones, then stop batching."""
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        stoppers = [threading.Thread(target=self.grpc.stop, args=(grace,)),
                    threading.Thread(target=self.http.stop, args=(grace,))]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        self.core.close()
        log.info("gateway stopped")

    def __enter__(self) -> "Gateway":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
