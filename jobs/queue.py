"""The Celery application of batch jobs: Redis broker, at-least-once delivery.

The submitting side sends tasks by name through it; the workers (``worker.celery_app``) add
their task modules. Tasks are acknowledged only after they finish (``acks_late``), a task whose
worker process dies is handed back to the queue (``task_reject_on_worker_lost``), and each
process takes one message at a time (prefetch 1), so a crash loses no chunk. Work lost in ways
no acknowledgement covers (a whole worker killed, Redis down while a task ends, a hard time
limit) is re-queued by the workers' sweeper (``worker.sweeper``) within minutes; the
``visibility_timeout_s`` redelivery only has to stay above the chunk time limit.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

from jobs.settings import JobSettings


class JobsCelery(Celery):
    """A Celery app that carries the settings its tasks read (``self.app.settings``)."""

    def __init__(self, settings: JobSettings, **kwargs):
        super().__init__("newsclf", **kwargs)
        self.settings = settings


def create_app(settings: JobSettings, include: Sequence[str] = ()) -> JobsCelery:
    """The app for ``settings``; a worker names its task modules in ``include``."""
    app = JobsCelery(settings, broker=settings.redis_url, backend=settings.redis_url,
                     include=list(include))
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
        task_soft_time_limit=settings.soft_time_limit_s,
        task_serializer="json",
        accept_content=["json"],
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
    )
    return app
