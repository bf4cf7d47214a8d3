"""The sweeper: no job stays ``running`` (or ``queued``) with nothing working on it.

A message can be lost without any task noticing: a Redis outage while a task ends (its retry
or its next task cannot be queued), a broker restarted without its data, a task killed at its
hard time limit, a whole worker killed with a message in hand. The job then simply stops
moving. Every worker runs a sweeper thread in its main process; one at a time (a Redis lock)
looks every ``sweep_interval_s`` at the unfinished jobs:

- a job whose newest sign of life (creation, a counted chunk, a task's heartbeat, a task seen
  waiting in the queue) is older than ``stall_after_s`` and that has no message waiting in the
  queue is *stalled*: its work is re-queued from what is on disk (``prepare`` if the input was
  not read through, else every chunk not yet counted, else ``finalize``). Re-queued work can
  never reach the output twice: a chunk's part has one name and is counted once. After
  ``max_recoveries`` re-queues the job fails with the cause.
- a job that ended (cancelled by the gateway, failed) gets its record on disk and its partial
  files removed;
- a job Redis no longer holds (restarted empty) but whose record on disk (written by this
  store) says it was still running is recorded as failed with that reason, and its partial
  files are removed.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import uuid

import redis
from celery.signals import worker_ready, worker_shutdown

from jobs.files import read_record, write_record
from jobs.model import FINAL_STATES, PREPARE_TASK, QUEUED, RUNNING, JobPaths
from jobs.queue import create_app
from jobs.store import JobStore
from scoring.errors import NotFound, Unavailable
from worker.results import discard
from worker.settings import WorkerSettings
from worker.tasks import fail_job, lost_job, queue_pending

log = logging.getLogger(__name__)

LOCK_KEY = "newsclf:sweeper"
MAX_SCAN = 20_000  # queued messages looked at per sweep; beyond, every stalled job may be waiting
PAGE = 500
# kombu's Redis transport keeps one list per priority step besides the queue's own.
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


class Sweeper:
    """One sweep at a time over the unfinished jobs and the job folders; see the module doc."""

    def __init__(self, settings: WorkerSettings, store: JobStore | None = None, app=None):
        self.settings = settings
        self.store = store or JobStore(settings)
        self.app = app or create_app(settings)
        self.token = uuid.uuid4().hex
        self.settled: set[str] = set()

    def sweep(self) -> list[str]:
        """Run one sweep if this sweeper holds the lock; what it did, one line per action."""
        if not self._lead():
            return []
        actions = self._watch_active()
        actions += self._settle_folders()
        for action in actions:
            log.warning("sweeper: %s", action)
        return actions

    def _lead(self) -> bool:
        ttl_ms = int(self.settings.sweep_interval_s * 3000)
        client = self.store.redis
        if client.set(LOCK_KEY, self.token, nx=True, px=ttl_ms):
            return True
        if client.get(LOCK_KEY) == self.token:
            client.pexpire(LOCK_KEY, ttl_ms)
            return True
        return False

    # -- unfinished jobs ------------------------------------------------------------------

    def _watch_active(self) -> list[str]:
        ids = self.store.active()
        now = time.time()
        stalled, actions = [], []
        for job_id, row in zip(ids, self.store.watched(ids)):
            if row is None:
                self.store.forget(job_id)
                lost_job(self.store, self.settings, job_id)
                continue
            if row["state"] in FINAL_STATES:
                self._settle(job_id)
                self.store.forget(job_id)
                continue
            seen = max(float(row[key] or 0) for key in ("created_at", "progress_at", "heartbeat_at", "waiting_at"))
            if now - seen >= self.settings.stall_after_s:
                stalled.append((job_id, row))
        if stalled:
            waiting = self._waiting({job_id for job_id, _ in stalled})
            for job_id, row in stalled:
                if job_id in waiting:
                    self.store.transition(job_id, (QUEUED, RUNNING), waiting_at=now)
                else:
                    actions.append(self._recover(job_id, row))
        return actions

    def _waiting(self, job_ids: set[str]) -> set[str]:
        """Which of ``job_ids`` have a message waiting in the queue (not yet taken by a worker)."""
        found: set[str] = set()
        scanned = 0
        for suffix in PRIORITY_SUFFIXES:
            name = self.settings.queue + suffix
            start = 0
            while scanned < MAX_SCAN:
                raws = self.store.redis.lrange(name, start, start + PAGE - 1)
                if not raws:
                    break
                scanned += len(raws)
                start += len(raws)
                found.update(job for raw in raws if (job := _job_of(raw)) in job_ids)
            if scanned >= MAX_SCAN:
                return set(job_ids)
        return found

    def _recover(self, job_id: str, row: dict[str, str]) -> str:
        settings = self.settings
        cause = (f"no task of the job ran or waited in the queue for {settings.stall_after_s:g} s "
                 "(a message lost to a Redis outage or restart, or a worker killed mid-task)")
        recoveries = int(row["recoveries"] or 0) + 1
        if recoveries > settings.max_recoveries:
            fail_job(self.store, settings, job_id, f"stalled: {cause}; gave up after "
                                                   f"{settings.max_recoveries} re-queues (NEWSCLF_MAX_RECOVERIES)")
            return f"job {job_id} failed: stalled after {settings.max_recoveries} re-queues"
        if not self.store.transition(job_id, (QUEUED, RUNNING), recoveries=recoveries, progress_at=time.time()):
            return f"job {job_id} ended while being looked at"
        if row["state"] == QUEUED or not row["prepared"]:
            self._send(PREPARE_TASK, [job_id])
            return f"job {job_id}: {cause}; prepare re-queued (recovery {recoveries})"
        job = self.store.get(job_id)
        done = self.store.done_chunks(job_id)
        paths = JobPaths.of(settings, job_id)
        gone = [i for i in range(job.chunks_total)
                if i not in done and not paths.chunk(i).exists() and not paths.part(i).exists()]
        if gone:
            fail_job(self.store, settings, job_id, f"chunk file {paths.chunk(gone[0]).name} is gone from "
                                                   "the scratch folder; the job cannot be resumed")
            return f"job {job_id} failed: chunk files gone"
        queued = queue_pending(job, done, self._send)
        return f"job {job_id}: {cause}; {queued or 'finalize'} task(s) re-queued (recovery {recoveries})"

    def _send(self, name: str, args: list) -> None:
        self.app.send_task(name, args=args, queue=self.settings.queue)

    def _settle(self, job_id: str) -> None:
        """A job that ended: its record on disk says so, its partial files are gone."""
        paths = JobPaths.of(self.settings, job_id)
        try:
            job = self.store.get(job_id)
        except NotFound:
            return
        record = read_record(paths)
        if paths.results.exists() and (record is None or record[0].state != job.state):
            write_record(paths, job, self.store.name)
        discard(paths)

    # -- job folders ----------------------------------------------------------------------

    def _settle_folders(self) -> list[str]:
        """Job folders whose record (written by this store) says running while Redis no longer
        holds the job: fail the record, drop the partial files. Folders of jobs of another
        store sharing the same paths are left alone."""
        settings = self.settings
        names = sorted(set(_job_folders(settings.results_dir)) - self.settled)[:MAX_SCAN]
        actions = []
        for job_id, present in zip(names, self.store.exists(names)):
            if present:
                continue
            paths = JobPaths.of(settings, job_id)
            record = read_record(paths)
            if record is None or record[1] != self.store.name:
                self.settled.add(job_id)
                continue
            job = record[0]
            if not job.finished and time.time() - job.created_at < settings.stall_after_s:
                continue  # just created; Redis may not have answered the submitter yet
            if not job.finished or paths.scratch.exists() or (paths.results / "parts").exists():
                lost_job(self.store, settings, job_id)
                actions.append(f"job {job_id}: gone from Redis; record closed, partial files removed")
            self.settled.add(job_id)
        return actions


def _job_of(raw: str) -> str | None:
    """The job id a queued Celery message is for (its first argument), or None."""
    try:
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return args[0] if args and isinstance(args[0], str) else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _job_folders(folder) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if e.is_dir(follow_symlinks=False) and len(e.name) == 32
                    and e.name.isalnum()]
    except OSError:
        return []


class SweeperThread(threading.Thread):
    """Sweeps every ``sweep_interval_s`` until stopped; a failed sweep (Redis down) is retried
    at the next tick."""

    def __init__(self, settings: WorkerSettings):
        super().__init__(name="newsclf-sweeper", daemon=True)
        self.settings = settings
        self.stopped = threading.Event()

    def run(self) -> None:
        sweeper = Sweeper(self.settings)
        while not self.stopped.wait(self.settings.sweep_interval_s):
            try:
                sweeper.sweep()
            except (Unavailable, redis.RedisError, OSError) as exc:
                log.warning("sweeper: sweep skipped: %s", exc)
            except Exception:
                log.exception("sweeper: sweep failed")


_thread: SweeperThread | None = None


@worker_ready.connect
def _start(sender=None, **_: object) -> None:
    global _thread
    settings = getattr(getattr(sender, "app", None), "settings", None)
    if isinstance(settings, WorkerSettings) and _thread is None:
        _thread = SweeperThread(settings)
        _thread.start()
        log.info("sweeper started: every %g s, a job is stalled after %g s without a sign of life",
                 settings.sweep_interval_s, settings.stall_after_s)


@worker_shutdown.connect
def _stop(**_: object) -> None:
    if _thread is not None:
        _thread.stopped.set()
