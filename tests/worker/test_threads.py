"""TensorFlow's threads in a worker: each pool process gets its share of the cores, as each
concurrent model call does in the gateway, unless the environment sets a number."""

from __future__ import annotations

import re

import pytest

from scoring.cores import available_cores
from tests.support.processes import CeleryWorker
from worker.settings import WorkerSettings


def _threads_per_pool_process(env: dict[str, str], log, concurrency: int) -> list[str]:
    worker = CeleryWorker(env, log, concurrency=concurrency, name=log.stem)
    try:
        worker.wait_ready()
        return re.findall(r"worker process ready .*TensorFlow threads per op: (\w+)", worker.text())
    finally:
        worker.stop()


@pytest.mark.integration
def test_each_pool_process_gets_its_share_of_the_cores(env, job_root):
    env = {k: v for k, v in env.items() if k != "NEWSCLF_TF_INTRA_OP_THREADS"}
    assert _threads_per_pool_process(env, job_root / "threads-2.log", 2) == [str(max(1, available_cores() // 2))] * 2


@pytest.mark.integration
def test_zero_keeps_tensorflows_default(env, job_root):
    threads = _threads_per_pool_process(env | {"NEWSCLF_TF_INTRA_OP_THREADS": "0"}, job_root / "threads-0.log", 2)
    assert threads == ["default"] * 2


def test_workers_do_not_compile_with_xla_by_default(monkeypatch):
    """A job's one-text model check must not start XLA compiles in every pool process."""
    from service.settings import GatewaySettings

    monkeypatch.delenv("NEWSCLF_XLA_MAX_BATCH", raising=False)
    assert WorkerSettings().xla_max_batch == 0
    assert GatewaySettings().xla_max_batch == 32
