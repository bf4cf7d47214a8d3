"""Batch-scoring jobs: their state in Redis and the manager the gateway and CLI submit through.

Redis holds only pointers and counts (one hash per job, a set of finished chunk numbers, an
index sorted by submission time); documents and results live in files. State changes go through
small Lua scripts so a redelivered or duplicated task can never count a chunk twice or revive a
cancelled job.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis
from pydantic import BaseModel, Field, ValidationError, field_validator

from service.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from training.layout import LayoutError, check_model_name
from worker.readers import FORMATS, ReadOptions, check_archives, resolve_input
from worker.settings import JobSettings

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINAL_STATES = (DONE, FAILED, CANCELLED)
KEY_PREFIX = "newsclf:job:"
INDEX_KEY = "newsclf:jobs"
PREPARE_TASK = "newsclf.prepare"
CHUNK_TASK = "newsclf.score_chunk"
FINALIZE_TASK = "newsclf.finalize"
MAX_LIST = 1000


class JobRequest(BaseModel):
    """What a submitter asks for; everything but ``input`` has a default."""

    input: str = Field(min_length=1)
    format: str = "auto"
    id_field: str = Field(default="id", min_length=1, max_length=256)
    text_field: str = Field(default="text", min_length=1, max_length=256)
    model: str | None = None
    version: int | None = Field(default=None, ge=1)
    version_label: str | None = None
    top_k: int | None = Field(default=None, ge=1, le=46)
    csv: bool = False
    chunk_size: int | None = Field(default=None, ge=1, le=100_000)

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        if value:
            try:
                check_model_name(value)
            except LayoutError as exc:
                raise ValueError(str(exc)) from exc
        return value or None

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in ("auto", *FORMATS):
            raise ValueError(f"unknown format {value!r}: use auto, {', '.join(FORMATS)}")
        return value

    @field_validator("version_label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        return value or None


class Job(BaseModel):
    """A job as stored in Redis, with its progress and where its files are."""

    id: str
    state: str
    input: str
    format: str = "auto"
    id_field: str = "id"
    text_field: str = "text"
    model: str
    version: int | None = None
    version_label: str | None = None
    model_version: int | None = None
    top_k: int
    csv: bool = False
    chunk_size: int
    docs_total: int = 0
    docs_done: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    errors: int = 0
    error: str = ""
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    read_s: float = 0.0
    score_s: float = 0.0
    merge_s: float = 0.0
    results_path: str = ""
    csv_path: str = ""
    errors_path: str = ""

    @property
    def read_options(self) -> ReadOptions:
        return ReadOptions(format=self.format, id_field=self.id_field, text_field=self.text_field)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def elapsed_s(self) -> float:
        """Seconds from submission to the end (or to now while it runs)."""
        return (self.finished_at or time.time()) - self.created_at

    @classmethod
    def from_redis(cls, fields: dict[str, str]) -> "Job":
        data = {key: (None if value == "" and key in _OPTIONAL else value)
                for key, value in fields.items()}
        data["csv"] = fields.get("csv") == "1"
        return cls.model_validate(data)


_OPTIONAL = {"version", "version_label", "model_version", "started_at", "finished_at"}


def _to_redis(values: dict[str, object]) -> dict[str, str]:
    out = {}
    for key, value in values.items():
        if isinstance(value, bool):
            out[key] = "1" if value else "0"
        else:
            out[key] = "" if value is None else str(value)
    return out


@dataclass(frozen=True)
class JobPaths:
    """Deterministic file names of a job, shared by every worker process."""

    scratch: Path
    results: Path

    @classmethod
    def of(cls, settings: JobSettings, job_id: str) -> "JobPaths":
        return cls(settings.scratch_dir / job_id, settings.results_dir / job_id)

    def chunk(self, index: int) -> Path:
        return self.scratch / f"chunk-{index:06d}.jsonl"

    def part(self, index: int) -> Path:
        return self.results / "parts" / f"part-{index:06d}.jsonl"

    @property
    def results_jsonl(self) -> Path:
        return self.results / "results.jsonl"

    @property
    def results_csv(self) -> Path:
        return self.results / "results.csv"

    @property
    def errors_jsonl(self) -> Path:
        return self.results / "errors.jsonl"


# KEYS[1] job hash; ARGV[1] comma-separated states allowed now, ARGV[2..] field/value pairs.
_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
for allowed in string.gmatch(ARGV[1], '[^,]+') do
  if allowed == state then
    if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end
    return 1
  end
end
return 0
"""

# KEYS[1] job hash, KEYS[2] set of finished chunks; ARGV chunk index, docs, seconds, version.
# Counts a chunk once however often it is delivered; returns {chunks_done, chunks_total}.
_CHUNK_DONE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return {-1, -1} end
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'docs_done', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
  redis.call('HINCRBYFLOAT', KEYS[1], 'score_s', ARGV[3])
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'model_version', ARGV[4]) end
  local ttl = redis.call('TTL', KEYS[1])
  if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
end
return {tonumber(redis.call('HGET', KEYS[1], 'chunks_done')),
        tonumber(redis.call('HGET', KEYS[1], 'chunks_total'))}
"""


def _safe_url(url: str) -> str:
    """The Redis URL without its password, fit for an error message."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path}"


class JobStore:
    """Job state in Redis; every Redis failure surfaces as ``Unavailable`` with the address."""

    def __init__(self, settings: JobSettings, client: redis.Redis | None = None):
        self.settings = settings
        self.redis = client or redis.Redis.from_url(
            settings.redis_url, decode_responses=True,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s)
        self._transition = self.redis.register_script(_TRANSITION)
        self._chunk_done = self.redis.register_script(_CHUNK_DONE)

    @contextlib.contextmanager
    def _redis(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise Unavailable(f"job store (Redis at {_safe_url(self.settings.redis_url)}) is "
                              f"unreachable: {exc}") from exc

    @staticmethod
    def key(job_id: str) -> str:
        return KEY_PREFIX + job_id

    @classmethod
    def chunks_key(cls, job_id: str) -> str:
        return cls.key(job_id) + ":chunks"

    def ping(self) -> None:
        with self._redis():
            self.redis.ping()

    def create(self, job: Job) -> None:
        with self._redis():
            pipe = self.redis.pipeline()
            pipe.hset(self.key(job.id), mapping=_to_redis(job.model_dump()))
            pipe.expire(self.key(job.id), self.settings.job_ttl_s)
            pipe.zadd(INDEX_KEY, {job.id: job.created_at})
            pipe.execute()

    def get(self, job_id: str) -> Job:
        with self._redis():
            fields = self.redis.hgetall(self.key(job_id))
        if not fields:
            raise NotFound(f"job {job_id!r} not found")
        return Job.from_redis(fields)

    def state(self, job_id: str) -> str | None:
        with self._redis():
            return self.redis.hget(self.key(job_id), "state")

    def transition(self, job_id: str, allowed: tuple[str, ...], **fields: object) -> bool:
        """Set ``fields`` only while the job is in one of ``allowed``; NotFound if it is gone."""
        args = [",".join(allowed)]
        for key, value in _to_redis(fields).items():
            args += [key, value]
        with self._redis():
            result = self._transition(keys=[self.key(job_id)], args=args)
        if result == -1:
            raise NotFound(f"job {job_id!r} not found")
        return result == 1

    def chunk_done(self, job_id: str, index: int, docs: int, seconds: float,
                   model_version: int | None) -> tuple[int, int]:
        """Count a finished chunk once; (chunks done, chunks total), or (-1, -1) if not running."""
        with self._redis():
            done, total = self._chunk_done(
                keys=[self.key(job_id), self.chunks_key(job_id)],
                args=[index, docs, f"{seconds:.6f}", "" if model_version is None else model_version])
        return int(done), int(total)

    def done_chunks(self, job_id: str) -> set[int]:
        with self._redis():
            return {int(i) for i in self.redis.smembers(self.chunks_key(job_id))}

    def fail(self, job_id: str, message: str) -> bool:
        return self.transition(job_id, (QUEUED, RUNNING), state=FAILED, error=message,
                               finished_at=time.time())

    def list(self, limit: int = 50, state: str | None = None) -> list[Job]:
        """Newest first; entries whose hash expired are dropped from the index on the way."""
        limit = max(1, min(limit, MAX_LIST))
        jobs: list[Job] = []
        with self._redis():
            start = 0
            while len(jobs) < limit:
                ids = self.redis.zrevrange(INDEX_KEY, start, start + limit - 1)
                if not ids:
                    break
                pipe = self.redis.pipeline()
                for job_id in ids:
                    pipe.hgetall(self.key(job_id))
                for job_id, fields in zip(ids, pipe.execute()):
                    if not fields:
                        self.redis.zrem(INDEX_KEY, job_id)
                        continue
                    job = Job.from_redis(fields)
                    if state is None or job.state == state:
                        jobs.append(job)
                start += len(ids)
        return jobs[:limit]


class JobManager:
    """Submit, follow and cancel jobs; the one entry point of the gateway and the CLI."""

    def __init__(self, settings: JobSettings, store: JobStore | None = None, celery=None):
        self.settings = settings
        self.store = store or JobStore(settings)
        if celery is None:
            from worker.celery_app import create_app
            celery = create_app(settings)
        self.celery = celery

    def submit(self, request: JobRequest | dict) -> Job:
        """Validate, record and queue a job; the input is read by a worker, not here.

        Raises InvalidArgument (bad request), PermissionDenied (outside the allowed roots),
        NotFound (no such input) or Unavailable (Redis or the broker cannot be reached).
        """
        if not isinstance(request, JobRequest):
            try:
                request = JobRequest.model_validate(request)
            except ValidationError as exc:
                raise InvalidArgument(_validation_message(exc)) from exc
        check_archives(resolve_input(request.input, self.settings.roots))
        self.store.ping()
        job = Job(
            id=uuid.uuid4().hex, state=QUEUED, input=request.input, format=request.format,
            id_field=request.id_field, text_field=request.text_field,
            model=request.model or self.settings.default_model, version=request.version,
            version_label=request.version_label,
            top_k=request.top_k or self.settings.default_top_k, csv=request.csv,
            chunk_size=request.chunk_size or self.settings.chunk_size, created_at=time.time())
        self.store.create(job)
        try:
            self.celery.send_task(PREPARE_TASK, args=[job.id], queue=self.settings.queue,
                                  retry=False)
        except Exception as exc:  # kombu raises OperationalError or plain socket errors
            self.store.fail(job.id, f"could not queue the job: {exc}")
            raise Unavailable(f"job queue (Redis at {_safe_url(self.settings.redis_url)}) is "
                              f"unreachable: {exc}") from exc
        return job

    def get(self, job_id: str) -> Job:
        return self.store.get(_checked_id(job_id))

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
    if not job_id or len(job_id) > 64 or not job_id.isalnum():
        raise NotFound(f"job {job_id!r} not found")
    return job_id


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "request"
    return f"{where}: {first['msg']}"

