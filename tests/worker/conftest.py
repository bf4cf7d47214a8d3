"""Fixtures of the batch-scoring tests: a private redis-server and real `celery worker`
subprocesses scoring with the tiny SavedModels.

Each worker runs in its own session (process group) and logs to a file, so a test can find its
pool processes, kill them, and read what happened.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from jobs.manager import JobManager
from tests.support.processes import CeleryWorker, RedisServer
from tests.worker.helpers import settings_of, worker_env


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A redis-server of our own on a free loopback port, without persistence."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(scope="session")
def job_root(tmp_path_factory) -> Path:
    """Inputs live under ``data`` (an allowed root); results and scratch beside it."""
    root = tmp_path_factory.mktemp("jobs")
    for name in ("data", "results", "scratch"):
        (root / name).mkdir()
    return root


@pytest.fixture(scope="session")
def env(redis_url, tiny_model_root, job_root, corpus_dir) -> dict[str, str]:
    return worker_env(redis_url + "/0", tiny_model_root, job_root, corpus_dir.resolve())


@pytest.fixture(scope="session")
def celery_worker(env, job_root):
    """One worker with one pool process, shared by the tests that do not kill it."""
    worker = CeleryWorker(env, job_root / "worker.log")
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="session")
def manager(env, celery_worker) -> JobManager:
    jobs = JobManager(settings_of(env))
    yield jobs
    jobs.close()


@pytest.fixture
def data_dir(job_root, request) -> Path:
    """A fresh folder under the allowed root for one test's inputs."""
    folder = job_root / "data" / re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


