"""One gateway: the core plus its gRPC and HTTP front ends, started and stopped together."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from jobs.manager import JobManager
from scoring.backends.base import Backend
from service.core import ClassifierService
from service.draining import Drain
from service.grpc_api.server import build_grpc_server
from service.http_api.app import create_app
from service.http_api.server import HttpServer
from service.metrics import Metrics
from service.settings import GatewaySettings

log = logging.getLogger(__name__)


class Gateway:
    """Serves ``backend`` over gRPC and HTTP; ports of 0 pick free ones (``grpc_port``, ``http_port``).

    One of several gRPC processes (``service.processes``) shares its gRPC port and metrics
    folder with the others; the extra ones serve no HTTP (``http=False``).
    """

    def __init__(self, backend: Backend, settings: GatewaySettings, job_manager: JobManager | None = None,
                 host: str | None = None, grpc_port: int | None = None, http_port: int | None = None,
                 http: bool = True, share_grpc_port: bool = False, metrics_dir: Path | None = None):
        self.settings = settings
        metrics = Metrics(shared=metrics_dir)
        if job_manager is not None and http:
            metrics.watch_jobs(job_manager.store)
        self.core = ClassifierService(backend, settings, metrics)
        self.drain = Drain()
        self.grpc = self.http = None
        try:
            self.grpc = build_grpc_server(self.core, settings, job_manager, host=host, port=grpc_port,
                                          drain=self.drain, share_port=share_grpc_port)
            if http:
                self.http = HttpServer(create_app(self.core, settings, job_manager, drain=self.drain), settings,
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

    def stop(self, grace_s: float | None = None, drain_s: float | None = None) -> None:
        """Drain, then stop: readiness fails at once while both ports keep serving for ``drain_s``
        (load balancers notice); then new API calls are refused with UNAVAILABLE / 503, calls in
        flight finish within ``grace_s``, and the ports close."""
        drain_s = self.settings.shutdown_drain_s if drain_s is None else drain_s
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        self.drain.start_draining()
        self.grpc.drain()
        if drain_s > 0:
            log.info("draining: not ready, still serving for %.1fs", drain_s)
            time.sleep(drain_s)
        self.drain.refuse()
        deadline = time.monotonic() + grace
        if not self.drain.wait_idle(grace):
            log.warning("%d calls still in flight after the %.1fs grace period", self.drain.in_flight, grace)
        remaining = max(0.0, deadline - time.monotonic())
        stoppers = [threading.Thread(target=server.stop, args=(remaining,))
                    for server in (self.grpc, self.http) if server is not None]
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
