"""The three tasks of a job: prepare (read input into chunks), score a chunk, finalize (merge).

Every task may run more than once (acks_late, redelivery after a crash), so each is
idempotent: files are written under deterministic names through a temporary file and a rename,
and a chunk is counted in Redis once whatever the number of deliveries. The model backend is
created in each worker process after the fork, never in the parent.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from itertools import islice
from pathlib import Path
from typing import IO

import numpy as np
from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_process_shutdown

from service.backends.base import Backend
from service.errors import (DeadlineExceeded, NotFound, ResourceExhausted, ServiceError,
                            Unavailable)
from worker.jobs import (CANCELLED, CHUNK_TASK, DONE, FAILED, FINALIZE_TASK, PREPARE_TASK, QUEUED,
                         RUNNING, Job, JobPaths, JobStore)
from worker.readers import BadRecord, Record, read_input, resolve_input
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

# A chunk over its soft time limit is retried too: the machine may just have been busy.
RETRYABLE = (Unavailable, DeadlineExceeded, SoftTimeLimitExceeded)
MAX_RETRIES = 5
CANCEL_CHECK_S = 0.5

_backend: Backend | None = None
_backend_pid: int | None = None
_store: JobStore | None = None
_store_pid: int | None = None


def backend(settings: WorkerSettings) -> Backend:
    """This process's backend, created on first use after the fork (pid-checked)."""
    global _backend, _backend_pid
    if _backend is None or _backend_pid != os.getpid():
        from service.backends import create_backend
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


# -- files -------------------------------------------------------------------------------------

@contextmanager
def atomic_file(path: Path, mode: str = "w", durable: bool = True) -> Iterator[IO]:
    """Write ``path`` through a temporary file in the same folder and rename it into place, so
    a reader (or a redelivered task) sees either the whole file or none; ``durable`` also syncs
    it to disk first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        text = "b" not in mode
        with os.fdopen(fd, mode, encoding="utf-8" if text else None,
                       newline="" if text else None) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _json_line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def _batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


# -- task plumbing -----------------------------------------------------------------------------

def _run(task: Task, job_id: str, body) -> object:
    """Run ``body``: retry on a passing outage, fail the job (never the worker) on anything else."""
    settings: WorkerSettings = task.app.settings
    jobs = store(settings)
    try:
        return body(settings, jobs)
    except RETRYABLE as exc:
        reason = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
        if task.request.retries < MAX_RETRIES:
            log.warning("job %s: %s; retrying", job_id, reason)
            raise task.retry(exc=exc, countdown=min(2 ** task.request.retries, 30))
        _fail(jobs, job_id, reason)
    except ServiceError as exc:
        _fail(jobs, job_id, f"{type(exc).__name__}: {exc.message}")
    except Exception as exc:
        log.exception("job %s failed", job_id)
        _fail(jobs, job_id, f"internal error: {type(exc).__name__}: {exc}")
    return None


def _fail(jobs: JobStore, job_id: str, message: str) -> None:
    try:
        jobs.fail(job_id, message)
    except NotFound:
        log.warning("job %s vanished (expired?) before it could be marked failed: %s", job_id, message)


def _send(task_name: str, args: list, settings: WorkerSettings) -> None:
    from celery import current_app
    current_app.send_task(task_name, args=args, queue=settings.queue)


# -- prepare -----------------------------------------------------------------------------------

@shared_task(bind=True, name=PREPARE_TASK, max_retries=MAX_RETRIES)
def prepare(self: Task, job_id: str) -> object:
    """Read the input once into chunk files (and the errors file), queueing each as written."""
    return _run(self, job_id, lambda settings, jobs: _prepare(job_id, settings, jobs))


class _Stopped(Exception):
    """The job left ``running`` (cancelled, failed) while its input was being read."""


def _prepare(job_id: str, settings: WorkerSettings, jobs: JobStore) -> int:
    job = jobs.get(job_id)
    if job.state == QUEUED:
        if not jobs.transition(job_id, (QUEUED,), state=RUNNING, started_at=time.time()):
            return 0
    elif job.state != RUNNING:
        return 0
    if job.chunks_total:  # a redelivered prepare that had finished reading
        return _queue_chunks(jobs.get(job_id), settings, jobs)
    started = time.monotonic()
    # One short call checks the model exists before the whole input is read (NotFound early).
    backend(settings).classify(["model check"], job.model, job.version, job.version_label)

    def queue(index: int, count: int) -> None:
        # Each chunk is queued as soon as it is written, so other worker processes score
        # while this one still reads.
        if jobs.state(job_id) != RUNNING:
            raise _Stopped
        _send(CHUNK_TASK, [job_id, index, count], settings)

    paths = JobPaths.of(settings, job_id)
    try:
        docs, chunks, errors = _write_chunks(job, paths, settings, queue)
    except _Stopped:
        _discard(paths)
        return 0
    fields = dict(docs_total=docs, chunks_total=chunks, errors=errors,
                  errors_path=str(paths.errors_jsonl), read_s=round(time.monotonic() - started, 3))
    if not jobs.transition(job_id, (RUNNING,), **fields):
        return 0
    # A chunk finishing before chunks_total was set could not tell it was the last one.
    job = jobs.get(job_id)
    if job.chunks_done == job.chunks_total:
        _send(FINALIZE_TASK, [job_id], settings)
    return chunks


def _write_chunks(job: Job, paths: JobPaths, settings: WorkerSettings,
                  on_chunk: Callable[[int, int], None]) -> tuple[int, int, int]:
    """Split the input into chunk files of ``job.chunk_size`` records, calling ``on_chunk`` with
    each one's number and size once written; bad records go to errors.jsonl."""
    roots = settings.roots
    items = read_input(resolve_input(job.input, roots), roots, job.read_options)
    docs = chunks = errors = 0
    records: list[Record] = []

    def flush() -> None:
        nonlocal docs, chunks, records
        _write_chunk(paths.chunk(chunks), records)
        on_chunk(chunks, len(records))
        docs, chunks, records = docs + len(records), chunks + 1, []

    with atomic_file(paths.errors_jsonl) as errors_out:
        for item in items:
            if isinstance(item, BadRecord):
                errors += 1
                errors_out.write(_json_line({"id": item.id, "source": item.source, "reason": item.reason}))
                continue
            records.append(item)
            if len(records) == job.chunk_size:
                if chunks >= settings.max_chunks:
                    raise ResourceExhausted(f"input has more than {settings.max_chunks * job.chunk_size} "
                                            "documents; raise chunk_size or split the input")
                flush()
        if records:
            flush()
    return docs, chunks, errors


def _write_chunk(path: Path, records: list[Record]) -> None:
    """Scratch files are not synced: each chunk task checks it holds the records it was sent."""
    with atomic_file(path, durable=False) as out:
        out.writelines(_json_line({"id": r.id, "text": r.text}) for r in records)


def _queue_chunks(job: Job, settings: WorkerSettings, jobs: JobStore) -> int:
    """Queue every chunk not yet counted; a duplicate of a queued chunk is harmless."""
    done = jobs.done_chunks(job.id)
    pending = [i for i in range(job.chunks_total) if i not in done]
    for index in pending:
        count = min(job.chunk_size, job.docs_total - index * job.chunk_size)
        _send(CHUNK_TASK, [job.id, index, count], settings)
    if not pending:
        _send(FINALIZE_TASK, [job.id], settings)
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
            _discard(paths)
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
    if total > 0 and done == total:
        _send(FINALIZE_TASK, [job_id], settings)
    return scored


def _score(job: Job, chunk: Path, count: int, settings: WorkerSettings,
           jobs: JobStore) -> tuple[list[str] | None, int | None]:
    """Result lines of one chunk, or None when the job stopped running meanwhile.

    Whether the job was cancelled is asked at most every ``CANCEL_CHECK_S``, not per batch: a
    Redis round trip per batch costs more than a small model call.
    """
    model = backend(settings)
    with chunk.open(encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    if len(records) != count:
        raise RuntimeError(f"{chunk.name} holds {len(records)} records, {count} were written: "
                           "the scratch folder was damaged")
    lines: list[str] = []
    version = None
    checked = time.monotonic()
    for batch in _batches(records, settings.batch_size):
        if time.monotonic() - checked > CANCEL_CHECK_S:
            if jobs.state(job.id) != RUNNING:
                return None, None
            checked = time.monotonic()
        result = model.classify([r["text"] for r in batch], job.model, job.version, job.version_label)
        version = result.version
        lines += _result_lines([r["id"] for r in batch], result.probabilities, result.labels,
                               min(job.top_k, len(result.labels)),
                               f', "model": {json.dumps(result.model)}, "version": {result.version}}}\n')
    return lines, version


def _result_lines(ids: list[str], probabilities: np.ndarray, labels: list[str], k: int,
                  tail: str) -> list[str]:
    """JSON Lines of the top ``k`` topics per document, most probable first.

    Built from pre-encoded pieces rather than one ``json.dumps`` per document: at tens of
    thousands of documents a second the encoder is a visible share of a chunk's time.
    """
    top = np.argsort(-probabilities, axis=1)[:, :k]
    best = np.round(np.take_along_axis(probabilities, top, axis=1).astype(np.float64), 6).tolist()
    names = [json.dumps(label) for label in labels]
    return [f'{{"id": {json.dumps(doc_id, ensure_ascii=False)}, "topics": ['
            + ", ".join(f'{{"topic": {names[i]}, "probability": {p!r}}}' for i, p in zip(indices, row))
            + "]" + tail
            for doc_id, indices, row in zip(ids, top.tolist(), best)]


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
    merged = 0
    with atomic_file(paths.results_jsonl, "wb") as out:
        for part in parts:
            with part.open("rb") as handle:
                for line in handle:
                    out.write(line)
                    merged += 1
    if merged != job.docs_done:
        raise RuntimeError(f"merged {merged} results but {job.docs_done} were counted: a part was "
                           "lost or damaged")
    if job.csv:
        _write_csv(paths.results_csv, parts, job.top_k)
    finished = jobs.transition(
        job_id, (RUNNING,), state=DONE, finished_at=time.time(),
        results_path=str(paths.results_jsonl), csv_path=str(paths.results_csv) if job.csv else "",
        merge_s=round(time.monotonic() - started, 3))
    if finished:
        _discard(paths)
    return finished


def _discard(paths: JobPaths) -> None:
    """Remove a job's chunk files and result parts (kept: results, CSV and errors files)."""
    shutil.rmtree(paths.scratch, ignore_errors=True)
    shutil.rmtree(paths.results / "parts", ignore_errors=True)


def _write_csv(path: Path, parts: list[Path], top_k: int) -> None:
    """One row per document: id, model, version, then topic_N / probability_N columns."""
    header = ["id", "model", "version"]
    for n in range(1, top_k + 1):
        header += [f"topic_{n}", f"probability_{n}"]
    with atomic_file(path) as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for part in parts:
            with part.open(encoding="utf-8") as handle:
                for line in handle:
                    row = json.loads(line)
                    cells = [row["id"], row["model"], row["version"]]
                    for topic in row["topics"]:
                        cells += [topic["topic"], topic["probability"]]
                    writer.writerow(cells)

