"""The three tasks of a job: prepare (read input into chunks), score a chunk, finalize (merge).

Every task may run more than once (acks_late, redelivery after a crash, a re-queue by the
sweeper), so each is idempotent: files are written under deterministic names through a
temporary file and a rename, and a chunk is counted in Redis once whatever the number of
deliveries. A running task beats a heartbeat into its job, so the sweeper can tell a slow task
from a lost one; a job that fails for any reason loses its scratch and part files at once and
keeps the reason in ``error``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure

from jobs.files import atomic_file, read_record, write_record
from jobs.model import (
    CANCELLED,
    CHUNK_TASK,
    DONE,
    FAILED,
    FINALIZE_TASK,
    PREPARE_TASK,
    QUEUED,
    RECORD_LOST,
    RUNNING,
    Job,
    JobPaths,
)
from jobs.store import JobGone, JobStore
from scoring.errors import DeadlineExceeded, NotFound, ServiceError, Unavailable
from worker.chunks import read_chunk, score_records, write_chunks
from worker.resources import backend, store
from worker.results import discard, merge, write_csv
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

RETRYABLE = (Unavailable, DeadlineExceeded)
MAX_RETRIES = 5
TASKS = (PREPARE_TASK, CHUNK_TASK, FINALIZE_TASK)


# -- task plumbing -----------------------------------------------------------------------------

def _run(task: Task, job_id: str, body: Callable[[WorkerSettings, JobStore], object]) -> object:
    """Run ``body`` with a heartbeat: retry on a passing outage, fail the job (never the worker)
    on anything else, and clean up after a job that failed or was lost."""
    settings: WorkerSettings = task.app.settings
    jobs = store(settings)
    try:
        with heartbeat(jobs, job_id, settings.heartbeat_s):
            return body(settings, jobs)
    except RETRYABLE as exc:
        reason = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
        if task.request.retries < MAX_RETRIES:
            log.warning("job %s: %s; retrying", job_id, reason)
            countdown = min(2 ** task.request.retries, settings.stall_after_s / 2)
            raise task.retry(exc=exc, countdown=countdown)
        fail_job(jobs, settings, job_id, reason)
    except SoftTimeLimitExceeded:
        fail_job(jobs, settings, job_id, f"{task.name} passed its time limit of "
                                          f"{settings.soft_time_limit_s:g} s (NEWSCLF_CHUNK_TIME_LIMIT_S)")
    except JobGone:
        lost_job(jobs, settings, job_id)
    except ServiceError as exc:
        fail_job(jobs, settings, job_id, f"{type(exc).__name__}: {exc.message}")
    except Exception as exc:
        log.exception("job %s failed", job_id)
        fail_job(jobs, settings, job_id, f"internal error: {type(exc).__name__}: {exc}")
    return None


@contextmanager
def heartbeat(jobs: JobStore, job_id: str, interval: float) -> Iterator[None]:
    """Beat ``heartbeat_at`` into the job every ``interval`` seconds while the block runs, from a
    thread, so a long model call or a slow read still shows the task alive. Redis errors are
    left to the task itself: a missed beat only makes the sweeper look closer."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                if not jobs.beat(job_id):
                    return
            except Unavailable:
                continue

    thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=1.0)


def fail_job(jobs: JobStore, settings: WorkerSettings, job_id: str, message: str) -> None:
    """Mark the job failed with ``message``, keep that on disk, and remove its partial files."""
    paths = JobPaths.of(settings, job_id)
    try:
        if jobs.fail(job_id, message):
            write_record(paths, jobs.get(job_id), jobs.name)
    except NotFound:
        lost_job(jobs, settings, job_id)
        return
    except (Unavailable, OSError) as exc:
        log.warning("job %s: could not record its failure (%s): %s", job_id, exc, message)
    discard(paths)


def lost_job(jobs: JobStore, settings: WorkerSettings, job_id: str) -> None:
    """Redis no longer holds the job: say so in its record and drop its partial files. A job
    recorded by another job store sharing the folders is left alone."""
    paths = JobPaths.of(settings, job_id)
    record = read_record(paths)
    if record is None or record[1] != jobs.name:
        return
    job = record[0]
    if not job.finished:
        log.warning("job %s: %s", job_id, RECORD_LOST)
        write_record(paths, job.model_copy(update={"state": FAILED, "error": RECORD_LOST,
                                                   "finished_at": time.time()}), jobs.name)
    discard(paths)


def _send(task_name: str, args: list, settings: WorkerSettings) -> None:
    from celery import current_app
    current_app.send_task(task_name, args=args, queue=settings.queue)


@task_failure.connect
def _hard_time_limit(sender=None, exception=None, args=None, **_: object) -> None:
    """A task killed at its hard time limit (in the worker's main process): fail its job with
    that reason rather than leave it running with nothing queued."""
    if not isinstance(exception, TimeLimitExceeded) or getattr(sender, "name", None) not in TASKS:
        return
    settings = getattr(sender.app, "settings", None)
    if not isinstance(settings, WorkerSettings) or not args:
        return
    what = sender.name if sender.name != CHUNK_TASK else f"chunk {args[1]}"
    try:
        fail_job(store(settings), settings, args[0],
                 f"{what} was killed at its hard time limit of {settings.chunk_time_limit_s:g} s "
                 "(NEWSCLF_CHUNK_TIME_LIMIT_S)")
    except Exception:  # the sweeper notices the job later
        log.exception("job %s: could not fail it after its hard time limit", args[0])


# -- prepare -----------------------------------------------------------------------------------

@shared_task(bind=True, name=PREPARE_TASK, max_retries=MAX_RETRIES)
def prepare(self: Task, job_id: str) -> object:
    """Read the input once into chunk files (and the errors file), queueing each as written."""
    return _run(self, job_id, lambda settings, jobs: _prepare(job_id, settings, jobs))


class _Stopped(Exception):
    """The job left ``running`` (cancelled, failed) while its input was being read."""


def _prepare(job_id: str, settings: WorkerSettings, jobs: JobStore) -> int:
    job = jobs.get(job_id)
    paths = JobPaths.of(settings, job_id)
    if job.state == QUEUED:
        if not jobs.transition(job_id, (QUEUED,), state=RUNNING, started_at=time.time()):
            return 0
    elif job.state != RUNNING:  # a redelivery after the job ended: what a killed run left goes
        if job.state != DONE:
            discard(paths)
        return 0
    if jobs.watched([job_id])[0].get("prepared"):  # a redelivered prepare that had finished
        return queue_pending(jobs.get(job_id), jobs.done_chunks(job_id),
                             lambda name, args: _send(name, args, settings))
    write_record(paths, jobs.get(job_id), jobs.name)
    started = time.monotonic()
    # One short call checks the model exists before the whole input is read (NotFound early).
    backend(settings).classify(["model check"], job.model, job.version, job.version_label)

    def queue(index: int, count: int) -> None:
        # Each chunk is queued as soon as it is written, so other worker processes score
        # while this one still reads.
        if jobs.state(job_id) != RUNNING:
            raise _Stopped
        _send(CHUNK_TASK, [job_id, index, count], settings)

    try:
        docs, chunks, errors = write_chunks(job, paths, settings, queue)
    except _Stopped:
        discard(paths)
        return 0
    fields = dict(docs_total=docs, chunks_total=chunks, errors=errors, prepared=1,
                  errors_path=str(paths.errors_jsonl), read_s=round(time.monotonic() - started, 3))
    if not jobs.transition(job_id, (RUNNING,), **fields):
        return 0
    # A chunk finishing before chunks_total was set could not tell it was the last one.
    job = jobs.get(job_id)
    if job.chunks_done == job.chunks_total:
        _send(FINALIZE_TASK, [job_id], settings)
    return chunks


def queue_pending(job: Job, done: set[int], send: Callable[[str, list], None]) -> int:
    """Queue every chunk of a read job not yet counted, or finalize when none is left; a
    duplicate of a chunk still queued costs a check, never a second part."""
    pending = [i for i in range(job.chunks_total) if i not in done]
    for index in pending:
        count = min(job.chunk_size, job.docs_total - index * job.chunk_size)
        send(CHUNK_TASK, [job.id, index, count])
    if not pending:
        send(FINALIZE_TASK, [job.id])
    return len(pending)


# -- score a chunk -----------------------------------------------------------------------------

@shared_task(bind=True, name=CHUNK_TASK, max_retries=MAX_RETRIES)
def score_chunk(self: Task, job_id: str, index: int, count: int) -> object:
    """Score one chunk in batches and write its part; the last chunk counted queues finalize."""
    return _run(self, job_id, lambda settings, jobs: _score_chunk(job_id, index, count, settings, jobs))


def _score_chunk(job_id: str, index: int, count: int, settings: WorkerSettings,
                 jobs: JobStore) -> int:
    job = jobs.get(job_id)
    paths = JobPaths.of(settings, job_id)
    if job.state != RUNNING:
        if job.state in (CANCELLED, FAILED):
            discard(paths)
        return 0
    part = paths.part(index)
    started = time.monotonic()
    version = job.model_version
    if part.exists():  # written by an earlier delivery that died before it was counted
        with part.open(encoding="utf-8") as existing:
            scored = sum(1 for _ in existing)
    else:
        lines, version = _score(job, paths.chunk(index), count, settings, jobs)
        if lines is None:
            return 0
        # Not synced: finalize checks the merged total against the counts in Redis.
        with atomic_file(part, durable=False) as out:
            out.writelines(lines)
        scored = len(lines)
    done, total = jobs.chunk_done(job_id, index, scored, time.monotonic() - started, version)
    if done < 0:  # the job ended meanwhile (a late duplicate): leave nothing behind
        if jobs.state(job_id) != DONE:
            discard(paths)
        else:
            part.unlink(missing_ok=True)
        return 0
    if total > 0 and done == total:
        _send(FINALIZE_TASK, [job_id], settings)
    return scored


def _score(job: Job, chunk: Path, count: int, settings: WorkerSettings,
           jobs: JobStore) -> tuple[list[str] | None, int | None]:
    """Result lines of one chunk, or None when the job stopped running meanwhile."""
    return score_records(read_chunk(chunk, count), job, backend(settings), settings.batch_size,
                         lambda: jobs.state(job.id) == RUNNING)


# -- finalize ----------------------------------------------------------------------------------

@shared_task(bind=True, name=FINALIZE_TASK, max_retries=MAX_RETRIES)
def finalize(self: Task, job_id: str) -> object:
    """Merge the parts in input order into the results file(s) and mark the job done."""
    return _run(self, job_id, lambda settings, jobs: _finalize(job_id, settings, jobs))


def _finalize(job_id: str, settings: WorkerSettings, jobs: JobStore) -> bool:
    job = jobs.get(job_id)
    if job.state != RUNNING:
        return False
    started = time.monotonic()
    paths = JobPaths.of(settings, job_id)
    parts = [paths.part(i) for i in range(job.chunks_total)]
    missing = [p.name for p in parts if not p.exists()]
    if missing:
        raise RuntimeError(f"result parts missing at merge: {', '.join(missing[:3])}")
    merged = merge(parts, paths.results_jsonl)
    if merged != job.docs_done:
        raise RuntimeError(f"merged {merged} results but {job.docs_done} were counted: a part was "
                           "lost or damaged")
    if job.csv:
        write_csv(paths.results_csv, parts, job.top_k)
    finished = jobs.transition(
        job_id, (RUNNING,), state=DONE, finished_at=time.time(),
        results_path=str(paths.results_jsonl), csv_path=str(paths.results_csv) if job.csv else "",
        merge_s=round(time.monotonic() - started, 3))
    if finished:
        write_record(paths, jobs.get(job_id), jobs.name)
        discard(paths)
    return finished
