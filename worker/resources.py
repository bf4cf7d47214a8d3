"""Per-process resources of a worker: the model backend and the Redis job store.

Each is created in the pool process after the fork, never in the parent, and re-created if the
process id changes; the models are loaded as soon as a pool process starts. Before the pool forks,
each of its processes is given its share of the cores for TensorFlow.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from celery.signals import celeryd_after_setup, worker_process_init, worker_process_shutdown

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


@celeryd_after_setup.connect
def _share_cores_among_pool_processes(instance=None, **_: object) -> None:
    """Runs in the main process once the pool's size is known and before it forks, so every
    pool process inherits the number. A solo pool scores in the main process alone."""
    settings = getattr(getattr(instance, "app", None), "settings", None)
    if not isinstance(settings, WorkerSettings):
        return
    solo = getattr(instance.pool_cls, "__module__", "") == "celery.concurrency.solo"
    settings.share_cores(1 if solo else (instance.max_concurrency or instance.concurrency))


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
        tf = sys.modules.get("tensorflow")  # loaded by the embedded backend only
        threads = tf.config.threading.get_intra_op_parallelism_threads() if tf else 0
        log.info("worker process ready (pid %d): models %s; TensorFlow threads per op: %s", os.getpid(),
                 ", ".join(m.name for m in model.models()), threads or "default")
    else:
        log.warning("worker process %d: model backend not ready after %.0f s; tasks will wait",
                    os.getpid(), settings.model_load_timeout_s * 0.9)


@worker_process_shutdown.connect
def _close_backend(**_: object) -> None:
    if _backend is not None and _backend_pid == os.getpid():
        _backend.close()
