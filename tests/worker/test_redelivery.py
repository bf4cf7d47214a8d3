"""No lost and no doubled documents when worker processes die with SIGKILL mid-job."""

from __future__ import annotations

import os
import signal
import time

import pytest

from jobs.manager import JobManager
from tests.support.processes import CeleryWorker, wait_for
from tests.worker.helpers import scored_ids, settings_of, wait_finished, worker_env
from training.corpus import read_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VISIBILITY_S = 120
STALL_S = 5
SWEEP_S = 1
REST_OF_JOB_S = 60
WORKER_LOST = "WorkerLostError('Worker exited prematurely: signal 9 (SIGKILL)"


@pytest.fixture(scope="module")
def corpus_ids(corpus_dir) -> set[str]:
    return {str(doc.newid) for doc in read_corpus(corpus_dir)}


def wait_replaced(worker: CeleryWorker, old_pids: list[int]) -> None:
    wait_for(lambda: len(worker.pool_pids()) == 1 and worker.pool_pids() != old_pids,
             30, "a replacement pool process")


def kill_pool_process_mid_chunk(worker: CeleryWorker, manager: JobManager, job_id: str,
                                attempts: int = 3) -> None:
    """SIGKILL the pool process a quarter-second into a chunk, until a kill hits a running task.

    Small model batches make a chunk take most of a second; a kill that still lands between two
    chunks (or before the pool process accepted the next one) loses no task and proves nothing,
    so it is repeated on a later chunk."""
    for _ in range(attempts):
        done = manager.get(job_id).chunks_done
        wait_for(lambda: manager.get(job_id).chunks_done > done, 90, "a chunk to finish")
        time.sleep(0.25)
        [child] = worker.pool_pids()
        os.kill(child, signal.SIGKILL)
        try:
            # WorkerLostError is raised only for a task that was running in the killed process.
            wait_for(lambda: WORKER_LOST in worker.text(), 5, "the lost task to be reported")
            return
        except TimeoutError:
            wait_replaced(worker, [child])
    pytest.fail(f"no kill out of {attempts} landed inside a chunk:\n{worker.text()[-2000:]}")


def test_killed_pool_process_chunk_is_redelivered_exactly_once(redis_url, tiny_model_root, job_root,
                                                               corpus_dir, corpus_ids):
    """The pool process dies while scoring a chunk: the chunk is rejected and redelivered."""
    env = worker_env(redis_url + "/4", tiny_model_root, job_root, corpus_dir.resolve(), batch_size=4)
    manager = JobManager(settings_of(env))
    worker = CeleryWorker(env, job_root / "worker-pool-kill.log", name="poolkill")
    try:
        worker.wait_ready()
        job = manager.submit({"input": str(corpus_dir), "chunk_size": 2000})
        first_pool = worker.pool_pids()
        kill_pool_process_mid_chunk(worker, manager, job.id)
        job = wait_finished(manager, job.id, timeout=180)
        assert job.state == "done", job.error
        counts = scored_ids(job)
        assert set(counts) == corpus_ids and set(counts.values()) == {1}
        assert job.chunks_done == job.chunks_total == 11 and job.docs_done == job.docs_total
        wait_replaced(worker, first_pool)
    finally:
        worker.stop()
        manager.close()


def test_killed_worker_group_recovers_within_the_stall_bound(redis_url, tiny_model_root, job_root,
                                                            corpus_dir, corpus_ids):
    """The whole worker dies with a chunk in hand (no reject possible, its message stays
    unacknowledged): the next worker's sweeper re-queues the job's missing chunks once it has
    shown no sign of life for ``stall_after_s``, long before the visibility timeout."""
    env = worker_env(redis_url + "/3", tiny_model_root, job_root, corpus_dir.resolve(), batch_size=4,
                     visibility_timeout_s=VISIBILITY_S, chunk_time_limit_s=VISIBILITY_S - 10,
                     stall_after_s=STALL_S, sweep_interval_s=SWEEP_S)
    manager = JobManager(settings_of(env))
    first = CeleryWorker(env, job_root / "worker-first.log", name="first")
    second = None
    try:
        first.wait_ready()
        job = manager.submit({"input": str(corpus_dir), "chunk_size": 2000})
        wait_for(lambda: manager.get(job.id).chunks_done >= 1, 60, "the first chunk")
        # Kill while the next chunk is being scored: not in the gap between two chunks, and not
        # between a finished chunk's results and its acknowledgement (small model batches make a
        # chunk take most of a second, so a quarter-second in is mid-chunk).
        done = manager.get(job.id).chunks_done
        time.sleep(0.25)
        wait_for(lambda: manager.store.redis.hlen("unacked") == 1, 30, "a chunk in flight", step=0.005)
        first.kill()
        killed_at = time.monotonic()
        assert manager.store.redis.hlen("unacked") == 1, "a chunk should have been in flight"
        assert manager.get(job.id).chunks_done == done, "the chunk in flight had already finished"
        assert manager.get(job.id).state == "running"
        second = CeleryWorker(env, job_root / "worker-second.log", name="second")
        second.wait_ready()
        ready_at = time.monotonic()
        job = wait_finished(manager, job.id, timeout=120)
        recovered_s = time.monotonic() - killed_at
        assert job.state == "done", job.error
        # Stalled STALL_S after the kill, noticed within a sweep, then the rest of the corpus.
        bound = max(ready_at - killed_at, STALL_S) + SWEEP_S + REST_OF_JOB_S
        assert recovered_s < bound < VISIBILITY_S, (recovered_s, bound)
        assert "re-queued (recovery 1)" in second.text()
        counts = scored_ids(job)
        assert set(counts) == corpus_ids and set(counts.values()) == {1}
        assert job.chunks_done == job.chunks_total == 11
    finally:
        first.stop()
        if second is not None:
            second.stop()
        manager.close()
