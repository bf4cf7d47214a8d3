"""Helpers of the batch-scoring tests: the workers' environment, the submitter's settings, waiting
for a job. The processes themselves are in ``tests.support.processes``."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs.manager import JobManager
from jobs.model import Job
from jobs.settings import JobSettings
from tests.support.processes import CeleryWorker, service_env


def worker_env(redis_url: str, model_root: Path, job_root: Path, corpus: Path, **extra) -> dict:
    """A worker's environment: inputs under ``job_root/data`` and ``corpus``; ``extra`` overrides."""
    settings = dict(redis_url=redis_url, model_root=model_root, allowed_roots=f"{job_root / 'data'},{corpus}",
                    results_dir=job_root / "results", scratch_dir=job_root / "scratch", visibility_timeout_s=60,
                    chunk_time_limit_s=50, restore_interval_s=1, model_poll_interval_s=30,
                    heartbeat_s=0.5, stall_after_s=5, sweep_interval_s=1,
                    default_model="gru")  # the tiny root has rnn and gru
    return service_env(**(settings | extra))


def settings_of(env: dict[str, str]) -> JobSettings:
    """The submitter's settings, read from the same variables the worker was given."""
    values = {key[len("NEWSCLF_"):].lower(): value for key, value in env.items()
              if key.startswith("NEWSCLF_")}
    return JobSettings(**{k: v for k, v in values.items() if k in JobSettings.model_fields})


def wait_finished(manager: JobManager, job_id: str, timeout: float = 120.0) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = manager.get(job_id)
        if job.finished:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished after {timeout}s: {manager.get(job_id)}")


def scored_ids(job: Job) -> Counter:
    """How often each id appears in a job's results and errors files."""
    counts: Counter = Counter()
    for path in (job.results_path, job.errors_path):
        with open(path, encoding="utf-8") as handle:
            counts.update(json.loads(line)["id"] for line in handle)
    return counts


def peak_rss_mib(pid: int) -> float:
    """The peak resident memory of a process so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


@contextmanager
def worker_and_manager(env: dict[str, str], log: Path, name: str) -> Iterator[tuple[CeleryWorker, JobManager]]:
    """A ready `celery worker` subprocess with ``env`` and a job manager with the same settings."""
    worker = CeleryWorker(env, log, name=name)
    manager = JobManager(settings_of(env))
    try:
        worker.wait_ready()
        yield worker, manager
    finally:
        worker.stop()
        manager.close()
