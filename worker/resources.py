"""Per-process resources of a worker: the model backend and the Redis job store.

Each is created in the pool process after the fork, never in the parent, and re-created if the
process id changes; the models are loaded as soon as a pool process starts.
"""

from __future__ import annotations

import logging
import os
import time

from celery.signals import worker_process_init, worker_process_shutdown

from jobs.store import JobStore
from scoring.backends.base import Backend
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

_backend: Backend | None = None
_backend_pid: int | None = None
_store: JobStore | None = None
_store_pid: int | None = None


def backend(settings: WorkerSettings) -> Backend:
    """This process's backend, created on first use after the fork (pid-checked)."""
    global _backend, _backend_pid
    if _backend is None or _backend_pid != os.getpid():
        from scoring.backends import create_backend
        _backend, _backend_pid = create_backend(settings), os.getpid()
    return _backend


def store(settings: WorkerSettings) -> JobStore:
    """This process's Redis connection to the job state (pid-checked like the backend)."""
    global _store, _store_pid
    if _store is None or _store_pid != os.getpid():
        _store, _store_pid = JobStore(settings), os.getpid()
    return _store


@worker_process_init.connect
def _load_models_after_fork(**_: object) -> None:
    """Load the models as soon as a pool process exists, before it takes its first task.

    A chunk's time limit then measures scoring, not loading. A backend that stays unready
    (TF Serving down) does not hold the process forever: its tasks then wait or retry.
    """
    from celery import current_app
    settings = getattr(current_app, "settings", None)
    if not isinstance(settings, WorkerSettings):
        return
    model = backend(settings)
    deadline = time.monotonic() + settings.model_load_timeout_s * 0.9
    while not model.ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    if model.ready():
        log.info("worker process ready (pid %d): models %s", os.getpid(),
                 ", ".join(m.name for m in model.models()))
    else:
        log.warning("worker process %d: model backend not ready after %.0f s; tasks will wait",
                    os.getpid(), settings.model_load_timeout_s * 0.9)


@worker_process_shutdown.connect
def _close_backend(**_: object) -> None:
    if _backend is not None and _backend_pid == os.getpid():
        _backend.close()
