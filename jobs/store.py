"""Job state in Redis: one hash per job, a set of finished chunk numbers, an index sorted by
submission time, the set of unfinished jobs the sweeper watches, and idempotency keys.
Documents and results live in files; Redis holds only pointers and counts.

State changes go through small Lua scripts, so a redelivered or duplicated task can never count
a chunk twice or revive a cancelled job, and a heartbeat never recreates a job Redis lost.
Besides the fields of ``Job`` the hash holds the sweeper's bookkeeping: ``progress_at`` (last
counted chunk), ``heartbeat_at`` (a task is alive), ``waiting_at`` (a task was seen queued),
``recoveries`` and ``prepared`` (the input was read through).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import redis

from jobs.model import FAILED, INDEX_KEY, KEY_PREFIX, MAX_LIST, QUEUED, RUNNING, STATES, Job, to_redis
from jobs.settings import JobSettings
from scoring.errors import NotFound, Unavailable

ACTIVE_KEY = "newsclf:active"
SINCE_KEY = "newsclf:since"
IDEMPOTENCY_PREFIX = "newsclf:idempotency:"
WATCHED = ("state", "created_at", "progress_at", "heartbeat_at", "waiting_at", "recoveries",
           "prepared", "chunks_total")


class JobGone(NotFound):
    """The job's hash is not in Redis: it expired, never existed, or Redis lost it."""


# KEYS[1] job hash, [2] index, [3] active set, [4] since key, [5] idempotency key;
# ARGV[1] job id, [2] created_at, [3] ttl, [4] '1' if a key is given, [5] request fingerprint,
# ARGV[6..] field/value pairs. Returns "<id> <fingerprint>" of the job that holds the key.
_CREATE = """
redis.call('SET', KEYS[4], ARGV[2], 'NX')
if ARGV[4] == '1' then
  local held = redis.call('GET', KEYS[5])
  if held then return held end
  redis.call('SET', KEYS[5], ARGV[1] .. ' ' .. ARGV[5], 'EX', ARGV[3])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return ARGV[1] .. ' ' .. ARGV[5]
"""

# Documents scored by every job since Redis was created: a counter for monitoring.
DOCUMENTS_KEY = "newsclf:stats:documents"

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

# KEYS[1] job hash, KEYS[2] set of finished chunks, KEYS[3] documents scored by all jobs;
# ARGV chunk index, docs, seconds, version, now.
# Counts a chunk once however often it is delivered; returns {chunks_done, chunks_total}.
_CHUNK_DONE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return {-1, -1} end
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'docs_done', ARGV[2])
  redis.call('INCRBY', KEYS[3], ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
  redis.call('HINCRBYFLOAT', KEYS[1], 'score_s', ARGV[3])
  redis.call('HSET', KEYS[1], 'progress_at', ARGV[5])
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'model_version', ARGV[4]) end
  local ttl = redis.call('TTL', KEYS[1])
  if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
end
return {tonumber(redis.call('HGET', KEYS[1], 'chunks_done')),
        tonumber(redis.call('HGET', KEYS[1], 'chunks_total'))}
"""


def safe_url(url: str) -> str:
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
        self._create = self.redis.register_script(_CREATE)

    @property
    def name(self) -> str:
        """Which job store this is (Redis address and queue), as written into job records."""
        return f"{safe_url(self.settings.redis_url)}#{self.settings.queue}"

    @contextlib.contextmanager
    def _redis(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise Unavailable(f"job store (Redis at {safe_url(self.settings.redis_url)}) is "
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

    def create(self, job: Job, idempotency_key: str | None = None, fingerprint: str = "") -> tuple[str, str]:
        """Record ``job`` unless ``idempotency_key`` already names a job; returns the id and the
        request fingerprint of the job that holds the key (``job`` itself when it was created)."""
        key = IDEMPOTENCY_PREFIX + hashlib.sha256((idempotency_key or "").encode()).hexdigest()
        args = [job.id, job.created_at, self.settings.job_ttl_s, "1" if idempotency_key else "0", fingerprint]
        for field, value in to_redis(job.model_dump()).items():
            args += [field, value]
        with self._redis():
            held = self._create(keys=[self.key(job.id), INDEX_KEY, ACTIVE_KEY, SINCE_KEY, key], args=args)
        job_id, _, held_fingerprint = held.partition(" ")
        return job_id, held_fingerprint

    def since(self) -> float | None:
        """When this Redis first held a job (reset when it restarts empty), or None."""
        with self._redis():
            value = self.redis.get(SINCE_KEY)
        return float(value) if value else None

    def get(self, job_id: str) -> Job:
        with self._redis():
            fields = self.redis.hgetall(self.key(job_id))
        if not fields:
            raise JobGone(f"job {job_id!r} not found")
        return Job.from_redis(fields)

    def state(self, job_id: str) -> str | None:
        with self._redis():
            return self.redis.hget(self.key(job_id), "state")

    def transition(self, job_id: str, allowed: tuple[str, ...], **fields: object) -> bool:
        """Set ``fields`` only while the job is in one of ``allowed``; NotFound if it is gone."""
        args = [",".join(allowed)]
        for key, value in to_redis(fields).items():
            args += [key, value]
        with self._redis():
            result = self._transition(keys=[self.key(job_id)], args=args)
        if result == -1:
            raise JobGone(f"job {job_id!r} not found")
        return result == 1

    def chunk_done(self, job_id: str, index: int, docs: int, seconds: float,
                   model_version: int | None) -> tuple[int, int]:
        """Count a finished chunk once; (chunks done, chunks total), or (-1, -1) if not running."""
        with self._redis():
            done, total = self._chunk_done(
                keys=[self.key(job_id), self.chunks_key(job_id), DOCUMENTS_KEY],
                args=[index, docs, f"{seconds:.6f}", "" if model_version is None else model_version,
                      time.time()])
        return int(done), int(total)

    def beat(self, job_id: str) -> bool:
        """Mark a task of the job alive; False (never an error) once the job left ``running``."""
        try:
            return self.transition(job_id, (QUEUED, RUNNING), heartbeat_at=time.time())
        except NotFound:
            return False

    def active(self) -> list[str]:
        """Ids of the jobs not known to have finished (the sweeper's watch list)."""
        with self._redis():
            return sorted(self.redis.smembers(ACTIVE_KEY))

    def forget(self, job_id: str) -> None:
        with self._redis():
            self.redis.srem(ACTIVE_KEY, job_id)

    def watched(self, job_ids: list[str]) -> list[dict[str, str] | None]:
        """The sweeper's fields of each job (None for a job whose hash is gone)."""
        with self._redis():
            pipe = self.redis.pipeline()
            for job_id in job_ids:
                pipe.hmget(self.key(job_id), WATCHED)
            rows = pipe.execute()
        return [None if row[0] is None else dict(zip(WATCHED, (v or "" for v in row))) for row in rows]

    def exists(self, job_ids: list[str]) -> list[bool]:
        with self._redis():
            pipe = self.redis.pipeline()
            for job_id in job_ids:
                pipe.exists(self.key(job_id))
            return [bool(n) for n in pipe.execute()]

    def done_chunks(self, job_id: str) -> set[int]:
        with self._redis():
            return {int(i) for i in self.redis.smembers(self.chunks_key(job_id))}

    def stats(self) -> tuple[dict[str, int], int, int]:
        """For monitoring: jobs by state (expired ones skipped), tasks waiting in the queue,
        and documents scored since Redis was created."""
        with self._redis():
            ids = self.redis.zrange(INDEX_KEY, 0, -1)
            pipe = self.redis.pipeline()
            for job_id in ids:
                pipe.hget(self.key(job_id), "state")
            pipe.llen(self.settings.queue)
            pipe.get(DOCUMENTS_KEY)
            *states, waiting, documents = pipe.execute()
        counts = {state: 0 for state in STATES}
        for state in states:
            if state in counts:
                counts[state] += 1
        return counts, int(waiting), int(documents or 0)

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


