"""Helpers of the batch-scoring tests: worker subprocesses, settings, waiting."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest

from worker.jobs import Job, JobManager
from worker.settings import JobSettings

REPO = Path(__file__).resolve().parents[2]
CELERY = [sys.executable, "-m", "celery"]
WORKER_READY_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CeleryWorker:
    """A `celery -A worker.celery_app worker` subprocess with its own environment."""

    def __init__(self, env: dict[str, str], log: Path, concurrency: int = 1, name: str = "w"):
        self.log = log
        self.proc = subprocess.Popen(
            [*CELERY, "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
             "--concurrency", str(concurrency), "--pool", "prefork", "--without-mingle",
             "--without-gossip", "--hostname", f"{name}@%h"],
            cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self.concurrency = concurrency

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = WORKER_READY_S) -> None:
        """Until the main process is consuming and every pool process has loaded the models."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"celery worker exited with {self.proc.returncode}:\n{self.text()[-3000:]}")
            text = self.text()
            if " ready." in text and text.count("worker process ready") >= self.concurrency:
                return
            time.sleep(0.1)
        pytest.fail(f"celery worker not ready after {timeout}s:\n{self.text()[-3000:]}")

    def pool_pids(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def kill(self) -> None:
        """SIGKILL the whole worker (main and pool processes): nothing gets to clean up."""
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


def worker_env(redis_url: str, model_root: Path, job_root: Path, corpus: Path, **extra) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("NEWSCLF_")}
    env.update({
        "NEWSCLF_REDIS_URL": redis_url,
        "NEWSCLF_MODEL_ROOT": str(model_root),
        "NEWSCLF_ALLOWED_ROOTS": f"{job_root / 'data'},{corpus}",
        "NEWSCLF_RESULTS_DIR": str(job_root / "results"),
        "NEWSCLF_SCRATCH_DIR": str(job_root / "scratch"),
        "NEWSCLF_VISIBILITY_TIMEOUT_S": "60",
        "NEWSCLF_CHUNK_TIME_LIMIT_S": "50",
        "NEWSCLF_RESTORE_INTERVAL_S": "1",
        "NEWSCLF_MODEL_POLL_INTERVAL_S": "30",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(REPO),
    })
    env.update({f"NEWSCLF_{key.upper()}": str(value) for key, value in extra.items()})
    return env


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


def wait_for(predicate, timeout: float, what: str, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
