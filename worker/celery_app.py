"""The workers' Celery app: ``celery -A worker.celery_app worker``.

The app is built from ``WorkerSettings`` only when Celery looks it up, so importing this module
reads no environment.
"""

from __future__ import annotations

from jobs.queue import JobsCelery, create_app
from worker.settings import WorkerSettings

TASK_MODULES = ("worker.tasks", "worker.sweeper")


def create_worker_app(settings: WorkerSettings) -> JobsCelery:
    """The jobs' app with this package's tasks; a pool process loads its models before it
    reports up (see ``worker.resources``), so it is given as long as loading may take."""
    app = create_app(settings, include=TASK_MODULES)
    app.conf.worker_proc_alive_timeout = settings.model_load_timeout_s
    return app


def __getattr__(name: str):
    """``celery -A worker.celery_app`` looks up ``app``; build it (and read settings) only then."""
    if name in ("app", "celery"):
        app = create_worker_app(WorkerSettings())
        globals()["app"] = globals()["celery"] = app
        return app
    raise AttributeError(name)
