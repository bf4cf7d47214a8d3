"""The sweeper's decisions against a real Redis, with no worker taking the messages: a job whose
task waits in the queue is left alone, one whose task was lost is re-queued, and one that stays
stalled fails with the cause."""

from __future__ import annotations

import time

import pytest

from jobs.manager import JobManager
from tests.support.inputs import write_jsonl
from tests.worker.helpers import settings_of, worker_env
from worker.settings import WorkerSettings
from worker.sweeper import Sweeper

pytestmark = pytest.mark.integration


@pytest.fixture
def quiet(redis_url, tiny_model_root, job_root, corpus_dir):
    """A job store on its own Redis database that no worker consumes."""
    env = worker_env(redis_url + "/7", tiny_model_root, job_root, corpus_dir.resolve(), max_recoveries=2)
    manager = JobManager(settings_of(env))
    manager.store.redis.flushdb()
    settings = WorkerSettings(**{k: v for k, v in settings_of(env).model_dump().items()},
                              model_root=tiny_model_root)
    yield manager, Sweeper(settings)
    manager.store.redis.flushdb()
    manager.close()


def age(manager: JobManager, job_id: str, seconds: float) -> None:
    """Move every sign of life of the job ``seconds`` into the past."""
    key = manager.store.key(job_id)
    for field in ("created_at", "progress_at", "heartbeat_at", "waiting_at"):
        value = manager.store.redis.hget(key, field)
        if value:
            manager.store.redis.hset(key, field, float(value) - seconds)


def test_waiting_job_is_left_alone_lost_one_requeued_then_failed(quiet, data_dir):
    manager, sweeper = quiet
    queue = manager.settings.queue
    write_jsonl(data_dir / "a.jsonl")
    job = manager.submit({"input": str(data_dir / "a.jsonl")})
    stall = manager.settings.stall_after_s
    age(manager, job.id, stall + 1)
    assert sweeper.sweep() == [], "its prepare task is waiting in the queue"
    assert manager.store.redis.hget(manager.store.key(job.id), "waiting_at")

    for recovery in (1, 2):
        manager.store.redis.delete(queue)  # the message is lost
        age(manager, job.id, stall + 1)
        [action] = sweeper.sweep()
        assert f"prepare re-queued (recovery {recovery})" in action
        assert manager.store.redis.llen(queue) == 1
    manager.store.redis.delete(queue)
    age(manager, job.id, stall + 1)
    started = time.monotonic()
    [action] = sweeper.sweep()
    assert time.monotonic() - started < 2
    failed = manager.get(job.id)
    assert failed.state == "failed" and failed.error.startswith("stalled: no task of the job ran")
    assert "gave up after 2 re-queues" in failed.error and "failed" in action
