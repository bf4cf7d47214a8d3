"""Helpers of the batch-scoring tests: the workers' environment, the submitter's settings, waiting
for a job. The processes themselves are in ``tests.support.processes``."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.processes import service_env
from worker.jobs import Job, JobManager
from worker.settings import JobSettings


def worker_env(redis_url: str, model_root: Path, job_root: Path, corpus: Path, **extra) -> dict:
    """A worker's environment: inputs under ``job_root/data`` and ``corpus``; ``extra`` overrides."""
    settings = dict(redis_url=redis_url, model_root=model_root, allowed_roots=f"{job_root / 'data'},{corpus}",
                    results_dir=job_root / "results", scratch_dir=job_root / "scratch", visibility_timeout_s=60,
                    chunk_time_limit_s=50, restore_interval_s=1, model_poll_interval_s=30)
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
