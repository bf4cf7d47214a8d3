"""Fixtures of the batch-scoring tests: a private redis-server and real `celery worker`
subprocesses scoring with the tiny SavedModels.

Each worker runs in its own session (process group) and logs to a file, so a test can find its
pool processes, kill them, and read what happened.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.worker.helpers import REPO, CeleryWorker, free_port, settings_of, worker_env
from worker.jobs import JobManager

if not (REPO / "service" / "gen" / "newsclf" / "v1" / "jobs_pb2.py").exists():
    # service/gen is generated, not kept in git: the gateway's job API needs it built once.
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_protos.py")], check=True)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A redis-server of our own on a free loopback port, without persistence."""
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=(folder / "redis.log").open("w"), stderr=subprocess.STDOUT)
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"redis-server did not start: {(folder / 'redis.log').read_text()}")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


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


