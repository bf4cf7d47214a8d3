"""The Celery application of the batch workers: Redis broker, at-least-once delivery.

Start a worker with ``celery -A worker.celery_app worker``. Tasks are acknowledged only after
they finish (``acks_late``), a task whose worker process dies is handed back to the queue
(``task_reject_on_worker_lost``), and each process takes one message at a time (prefetch 1), so
a crash loses no chunk; a worker that vanishes entirely has its unacknowledged messages
redelivered once ``visibility_timeout_s`` passes, which settings keep above the chunk time
limit. Chunk tasks are idempotent, so a redelivered chunk writes its output exactly once.
"""

from __future__ import annotations

from celery import Celery

from worker.settings import JobSettings, WorkerSettings


class JobsCelery(Celery):
    """A Celery app that carries the settings its tasks read (``self.app.settings``)."""

    def __init__(self, settings: JobSettings, **kwargs):
        super().__init__("newsclf", **kwargs)
        self.settings = settings


def create_app(settings: JobSettings) -> JobsCelery:
    """The app for ``settings``: a worker passes WorkerSettings, a submitter JobSettings."""
    app = JobsCelery(settings, broker=settings.redis_url, backend=settings.redis_url,
                     include=["worker.tasks"])
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        "unacked_restore_interval": settings.restore_interval_s,
        "unacked_restore_throttle": 1,
        "socket_timeout": settings.redis_timeout_s * 5,
        "socket_connect_timeout": settings.redis_timeout_s,
    }
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue,
        task_ignore_result=True,
        task_time_limit=settings.chunk_time_limit_s,
        task_soft_time_limit=settings.chunk_time_limit_s * 0.9,
        task_serializer="json",
        accept_content=["json"],
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
    )
    if isinstance(settings, WorkerSettings):
        # A pool process loads its models before it reports up (see worker.tasks).
        app.conf.worker_proc_alive_timeout = settings.model_load_timeout_s
    return app


def __getattr__(name: str):
    """``celery -A worker.celery_app`` looks up ``app``; build it (and read settings) only then,
    so the gateway can import ``create_app`` without reading the worker's environment."""
    if name in ("app", "celery"):
        app = create_app(WorkerSettings())
        globals()["app"] = globals()["celery"] = app
        return app
    raise AttributeError(name)
