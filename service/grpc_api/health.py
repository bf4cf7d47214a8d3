"""Keeps ``grpc.health.v1`` in step with the backend: SERVING only when models can answer.

Statuses: ``""`` (the whole server) and ``newsclf.v1.Classifier`` follow overall readiness;
``newsclf.v1.Classifier/<model>`` follows each model. The backend is polled because model
versions come and go on disk without telling anyone.
"""

from __future__ import annotations

import threading

from grpc_health.v1 import health, health_pb2

from service.core import ClassifierService
from service.grpc_api.classifier import SERVICE_NAME

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
OVERALL = ("", SERVICE_NAME)


def model_service_name(model: str) -> str:
    return f"{SERVICE_NAME}/{model}"


def _order(change: tuple[str, int]) -> tuple[bool, bool]:
    """Going down, the whole server before its models; going up, after them: a client that has
    seen a model's status change never finds the server's status behind it."""
    name, status = change
    up = status == SERVING
    return up, (name in OVERALL) == up


class HealthReporter:
    def __init__(self, core: ClassifierService, interval_s: float):
        self.core = core
        self.interval_s = max(0.05, interval_s)
        self.servicer = health.HealthServicer(experimental_non_blocking=True)
        self._status: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="grpc-health", daemon=True)

    def start(self) -> None:
        self.poll()
        self._thread.start()

    def poll(self) -> None:
        overall, models = self.core.readiness()
        wanted = {name: False for name in self._status if name.startswith(f"{SERVICE_NAME}/")}
        wanted.update({"": overall, SERVICE_NAME: overall})
        wanted.update({model_service_name(name): ready for name, ready in models.items()})
        statuses = {name: SERVING if ready else NOT_SERVING for name, ready in wanted.items()}
        changed = [(name, status) for name, status in statuses.items()
                   if self._status.get(name) != status]  # Watch streams get one message per change
        for name, status in sorted(changed, key=_order):
            self.servicer.set(name, status)
            self._status[name] = status

    def stop(self) -> None:
        """Report NOT_SERVING everywhere (load balancers drain us) and stop polling."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.servicer.enter_graceful_shutdown()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()
