"""The submit-side entry point of the gateway and the CLI: submit, follow, cancel, list jobs.

It records a job and queues its first task in a few milliseconds: the input is listed, opened
and read by a worker, never here (``jobs.readers.check_input`` does only a few ``stat`` calls).
"""

from __future__ import annotations

import hashlib
import time

from pydantic import ValidationError

from jobs.files import read_record
from jobs.model import (
    CANCELLED,
    FAILED,
    PREPARE_TASK,
    QUEUED,
    RECORD_LOST,
    RUNNING,
    STATES,
    Job,
    JobPaths,
    JobRequest,
    issued_at,
    new_job_id,
)
from jobs.queue import create_app
from jobs.readers import check_input
from jobs.settings import JobSettings
from jobs.store import JobStore, safe_url
from scoring.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable


class JobManager:
    """Submit, follow and cancel jobs; the one entry point of the gateway and the CLI."""

    def __init__(self, settings: JobSettings, store: JobStore | None = None, celery=None):
        self.settings = settings
        self.store = store or JobStore(settings)
        self.celery = celery or create_app(settings)

    def submit(self, request: JobRequest | dict) -> Job:
        """Validate, record and queue a job; the input is read by a worker, not here.

        The same ``idempotency_key`` returns the job it first created (FailedPrecondition if the
        request differs). Raises InvalidArgument (bad request), PermissionDenied (outside the
        allowed roots), NotFound (no such input) or Unavailable (Redis or the broker is down).
        """
        if not isinstance(request, JobRequest):
            try:
                request = JobRequest.model_validate(request)
            except ValidationError as exc:
                raise InvalidArgument(_validation_message(exc)) from exc
        try:
            top_k = self.settings.top_k(request.top_k)
        except ValueError as exc:
            raise InvalidArgument(f"top_k: {exc}") from None
        check_input(request.input, self.settings.roots)
        now = time.time()
        job = Job(
            id=new_job_id(now), state=QUEUED, input=request.input, format=request.format,
            id_field=request.id_field, text_field=request.text_field,
            model=request.model or self.settings.default_model, version=request.version,
            version_label=request.version_label,
            top_k=top_k, csv=request.csv,
            chunk_size=request.chunk_size or self.settings.chunk_size, created_at=now)
        fingerprint = _fingerprint(request)
        held, held_fingerprint = self.store.create(job, request.idempotency_key, fingerprint)
        if held != job.id:
            if held_fingerprint != fingerprint:
                raise FailedPrecondition(f"idempotency key already used for another request (job {held})")
            return self.get(held)
        try:
            self.celery.send_task(PREPARE_TASK, args=[job.id], queue=self.settings.queue,
                                  retry=False)
        except Exception as exc:  # kombu raises OperationalError or plain socket errors
            self.store.fail(job.id, f"could not queue the job: {exc}")
            raise Unavailable(f"job queue (Redis at {safe_url(self.settings.redis_url)}) is "
                              f"unreachable: {exc}") from exc
        return job

    def get(self, job_id: str) -> Job:
        """The job's state; one whose record Redis lost answers ``failed`` with that reason."""
        job_id = _checked_id(job_id)
        try:
            return self.store.get(job_id)
        except NotFound:
            lost = self._lost(job_id)
            if lost is None:
                raise
            return lost

    def _lost(self, job_id: str) -> Job | None:
        """What is known of a job Redis no longer holds: the record a worker left beside its
        results, or, for an id issued before this Redis started empty, the fact of the loss."""
        record = read_record(JobPaths.of(self.settings, job_id))
        if record is not None:
            job = record[0]
            if job.finished:
                return job
            return job.model_copy(update={"state": FAILED, "error": RECORD_LOST})
        issued = issued_at(job_id)
        since = self.store.since() or time.time()
        if issued is None or not (since - self.settings.job_ttl_s < issued < since):
            return None
        return Job(id=job_id, state=FAILED, input="", model="", top_k=0, chunk_size=0,
                   created_at=issued, error=RECORD_LOST)

    def cancel(self, job_id: str) -> Job:
        """Stop a queued or running job; chunks not yet scored are skipped by the workers."""
        job_id = _checked_id(job_id)
        if not self.store.transition(job_id, (QUEUED, RUNNING), state=CANCELLED,
                                     finished_at=time.time()):
            job = self.store.get(job_id)
            raise FailedPrecondition(f"job {job_id} is already {job.state}")
        return self.store.get(job_id)

    def list(self, limit: int = 50, state: str | None = None) -> list[Job]:
        if state is not None and state not in STATES:
            raise InvalidArgument(f"unknown state {state!r}: use one of {', '.join(STATES)}")
        return self.store.list(limit, state)

    def close(self) -> None:
        self.store.redis.close()


def _checked_id(job_id: str) -> str:
    if not job_id or len(job_id) > 64 or not job_id.isalnum() or not job_id.isascii():
        raise NotFound(f"job {job_id!r} not found")
    return job_id


def _fingerprint(request: JobRequest) -> str:
    """A digest of what the request asks for, to tell a retry from a reuse of its key."""
    return hashlib.sha256(request.model_dump_json(exclude={"idempotency_key"}).encode()).hexdigest()[:32]


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "request"
    return f"{where}: {first['msg']}"
