"""The gateway's shutdown phases, shared by the gRPC and HTTP front ends.

``SERVING`` -> ``DRAINING``: readiness probes (gRPC health, ``/readyz``) fail at once, but calls
are still served, so load balancers have time to notice and stop sending.
``DRAINING`` -> ``REFUSING``: new API calls are refused with UNAVAILABLE / 503 while the calls in
flight finish; only then do the servers close their ports. A call is never cut off half-way.
"""

from __future__ import annotations

import enum
import threading
import time


class Phase(enum.Enum):
    SERVING = "serving"
    DRAINING = "draining"
    REFUSING = "refusing"


SHUTTING_DOWN = "the gateway is shutting down; retry on another instance"


class Drain:
    """The current phase and the API calls in flight; thread-safe."""

    def __init__(self) -> None:
        self._phase = Phase.SERVING
        self._in_flight = 0
        self._cond = threading.Condition()

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def serving(self) -> bool:
        """False from the start of the drain: readiness probes report not ready."""
        return self._phase is Phase.SERVING

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def start_draining(self) -> None:
        with self._cond:
            if self._phase is Phase.SERVING:
                self._phase = Phase.DRAINING

    def refuse(self) -> None:
        with self._cond:
            self._phase = Phase.REFUSING

    def enter(self) -> bool:
        """Count a new call in; False (and not counted) once new calls are refused."""
        with self._cond:
            if self._phase is Phase.REFUSING:
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Until no call is in flight (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._in_flight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True
