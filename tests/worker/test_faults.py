"""Jobs never hang or vanish: Redis taken away mid-job, hard time limits, hostile inputs, the
same submit twice, and the shared character limit, with a real redis-server and real `celery
worker` subprocesses."""

from __future__ import annotations

import os
import tarfile
import time
import zlib
from pathlib import Path

import pytest

from jobs.manager import JobManager
from jobs.model import RECORD_LOST, JobPaths
from scoring.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from tests.support.inputs import write_jsonl
from tests.support.processes import CeleryWorker, RedisServer, wait_for
from tests.worker.helpers import peak_rss_mib, scored_ids, settings_of, wait_finished, worker_and_manager, worker_env

pytestmark = pytest.mark.integration

GIB = 1 << 30
HARD_LIMIT_S = 2


def follow(manager: JobManager, job_id: str, timeout: float):
    """Poll until the job ends, riding out Redis being away; a NotFound fails the test at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            job = manager.get(job_id)
        except Unavailable:
            time.sleep(0.2)
            continue
        except NotFound as exc:
            pytest.fail(f"job {job_id} became a bare NOT_FOUND: {exc.message}")
        if job.finished:
            return job
        time.sleep(0.2)
    pytest.fail(f"job {job_id} still not finished after {timeout}s: {manager.get(job_id)}")


def assert_no_partial_files(manager: JobManager, job_id: str, timeout: float = 15) -> None:
    paths = JobPaths.of(manager.settings, job_id)
    wait_for(lambda: not paths.scratch.exists() and not (paths.results / "parts").exists(), timeout,
             f"the partial files of job {job_id} to be removed")


# -- Redis taken away mid-job ------------------------------------------------------------------

@pytest.fixture(scope="module")
def blip(tmp_path_factory, tiny_model_root, job_root, corpus_dir):
    """A redis-server that tests kill and restart, and a worker that outlives it."""
    folder = tmp_path_factory.mktemp("redis-blip")
    server = RedisServer(folder)
    env = worker_env(server.url + "/0", tiny_model_root, job_root, corpus_dir.resolve(), batch_size=2)
    worker = CeleryWorker(env, job_root / "worker-blip.log", name="blip")
    manager = JobManager(settings_of(env))
    try:
        worker.wait_ready()
        yield server, worker, manager
    finally:
        worker.stop()
        manager.close()
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("appendonly", [False, True], ids=["empty-restart", "appendonly"])
@pytest.mark.parametrize("outage_s", [1, 10])
def test_redis_killed_mid_job_ends_done_or_failed_never_stuck(blip, corpus_dir, appendonly, outage_s):
    server, _, manager = blip
    server.kill()
    server.start(appendonly=appendonly)
    wait_for(lambda: _answers(manager), 30, "Redis")
    expected = {str(n) for n in range(1, 2001)}
    job = manager.submit({"input": str(corpus_dir / "reut2-00[01].sgm"), "chunk_size": 100})
    wait_for(lambda: manager.get(job.id).chunks_done >= 3, 60, "three chunks")
    if appendonly:
        time.sleep(1.1)  # the job's record reaches the append-only file (fsync every second)
    server.kill()
    time.sleep(outage_s)
    server.start()
    restarted = time.monotonic()
    job = follow(manager, job.id, timeout=90)
    recovered_s = time.monotonic() - restarted
    print(f"redis outage {outage_s}s appendonly={appendonly}: {job.state} {recovered_s:.1f}s after restart")
    if job.state == "done":
        counts = scored_ids(job)
        assert set(counts) == expected and set(counts.values()) == {1}
    else:
        assert job.state == "failed" and job.error, job
        if not appendonly:
            assert job.error == RECORD_LOST
    assert_no_partial_files(manager, job.id)


def _answers(manager: JobManager) -> bool:
    try:
        manager.store.ping()
        return True
    except Unavailable:
        return False


# -- a worker with hostile-input settings ------------------------------------------------------

@pytest.fixture(scope="module")
def strict(redis_url, tiny_model_root, job_root, corpus_dir):
    """A worker with a 50-character limit, a short hard time limit (no soft limit) and /dev among
    its allowed roots, so a device can be named."""
    roots = f"{job_root / 'data'},{corpus_dir.resolve()},/dev"
    env = worker_env(redis_url + "/6", tiny_model_root, job_root, corpus_dir.resolve(),
                     allowed_roots=roots, max_chars=50, chunk_time_limit_s=HARD_LIMIT_S, chunk_soft_time_limit_s=0,
                     visibility_timeout_s=30, batch_size=1)
    with worker_and_manager(env, job_root / "worker-strict.log", "strict") as both:
        yield both


def test_max_chars_set_for_a_worker_is_honoured(strict, data_dir):
    _, manager = strict
    path = data_dir / "lengths.jsonl"
    path.write_text('{"id": "short", "text": "Wheat exports rose"}\n'
                    f'{{"id": "long", "text": "{"oil prices " * 18}"}}\n', encoding="utf-8")
    job = wait_finished(manager, manager.submit({"input": str(path)}).id, timeout=60)
    assert job.state == "done", job.error
    assert scored_ids(job) == {"short": 1, "long": 1}
    errors = Path(job.errors_path).read_text()
    assert '"long"' in errors and "longer than 50 characters" in errors
    assert job.docs_done == 1 and job.errors == 1


@pytest.mark.slow
def test_hard_time_limit_fails_the_job_with_its_reason(strict, data_dir):
    worker, manager = strict
    # 30,000 documents one per model call: far more than the limit allows one chunk.
    with (data_dir / "slow.jsonl").open("w") as out:
        out.writelines(f'{{"id": "d{i}", "text": "wheat and oil {i}"}}\n' for i in range(30_000))
    started = time.monotonic()
    job = manager.submit({"input": str(data_dir / "slow.jsonl"), "chunk_size": 30_000})
    job = follow(manager, job.id, timeout=60)
    failed_s = time.monotonic() - started
    print(f"hard time limit: failed {failed_s:.1f}s after submit")
    assert job.state == "failed" and f"chunk 0 was killed at its hard time limit of {HARD_LIMIT_S} s" in job.error
    # Celery's own log line may land after the job is marked failed: both follow the kill.
    wait_for(lambda: f"Hard time limit ({HARD_LIMIT_S:.1f}s) exceeded" in worker.text(), 10,
             "celery's hard time limit log line")
    assert_no_partial_files(manager, job.id)
    _still_usable(manager, data_dir)


def _still_usable(manager: JobManager, data_dir: Path) -> None:
    (data_dir / "short.jsonl").write_text(
        "".join(f'{{"id": "s{i}", "text": "Wheat exports rose {i}"}}\n' for i in range(3)))
    job = wait_finished(manager, manager.submit({"input": str(data_dir / "short.jsonl")}).id, timeout=60)
    assert job.state == "done" and job.docs_done == 3, job


def test_fifo_and_character_device_are_refused_and_the_worker_stays_usable(strict, data_dir):
    _, manager = strict
    os.mkfifo(data_dir / "feed.jsonl")
    (data_dir / "zero.jsonl").symlink_to("/dev/zero")
    for name, kind in (("feed.jsonl", "a FIFO"), ("zero.jsonl", "a character device")):
        with pytest.raises(InvalidArgument, match=kind):
            manager.submit({"input": str(data_dir / name)})
    # A glob is expanded by the worker: the job fails fast, saying why.
    for pattern, kind in (("feed*.jsonl", "a FIFO"), ("zero*.jsonl", "a character device")):
        started = time.monotonic()
        job = wait_finished(manager, manager.submit({"input": str(data_dir / pattern)}).id, timeout=30)
        assert job.state == "failed" and kind in job.error, job
        assert time.monotonic() - started < 10
    _still_usable(manager, data_dir)


def _gib_bomb(path: Path) -> None:
    """A .tar.gz of about 1 MiB holding one 1 GiB JSON Lines entry that is a single line."""
    size = GIB
    info = tarfile.TarInfo("bomb.jsonl")
    info.size = size
    block = b" " * (1 << 20)
    gzip = zlib.compressobj(9, zlib.DEFLATED, 31)
    with path.open("wb") as out:
        out.write(gzip.compress(info.tobuf()))
        for _ in range(size // len(block)):
            out.write(gzip.compress(block))
        out.write(gzip.compress(b"\0" * (2 * tarfile.BLOCKSIZE)))
        out.write(gzip.flush())


@pytest.mark.slow
def test_gib_bomb_is_read_in_bounded_memory(celery_worker, manager, data_dir):
    _gib_bomb(data_dir / "bomb.tar.gz")
    assert (data_dir / "bomb.tar.gz").stat().st_size < 8 << 20
    [pool] = celery_worker.pool_pids()
    before = peak_rss_mib(pool)
    started = time.monotonic()
    job = manager.submit({"input": str(data_dir / "bomb.tar.gz"), "format": "jsonl"})
    assert time.monotonic() - started < 1, "submit reads nothing of the archive"
    job = wait_finished(manager, job.id, timeout=120)
    took = time.monotonic() - started
    after = peak_rss_mib(pool)
    print(f"1 GiB bomb: {job.state} in {took:.1f}s, pool peak RSS {before:.0f} -> {after:.0f} MiB")
    assert job.state == "done" and job.errors == 1 and job.docs_done == 0, job
    assert "line longer than 4194304 bytes" in Path(job.errors_path).read_text()
    assert after - before < 64, f"peak RSS grew by {after - before:.0f} MiB"
    _still_usable(manager, data_dir)


# -- submit-side checks, idempotency, lost records (the shared worker) ----------------------------

def test_glob_over_a_symlink_loop_answers_within_2s(manager, data_dir):
    (data_dir / "loop").symlink_to(data_dir)
    (data_dir / "sub").mkdir()
    (data_dir / "sub" / "up").symlink_to(data_dir.parent)
    started = time.monotonic()
    job = manager.submit({"input": f"{data_dir}/**/no-such-file.jsonl"})
    assert time.monotonic() - started < 2
    job = wait_finished(manager, job.id, timeout=30)
    assert job.state == "failed" and "matches nothing" in job.error


def test_nul_byte_and_control_characters_are_invalid_argument(manager, data_dir):
    for spec in (f"{data_dir}/a\x00b.jsonl", f"{data_dir}/a\nb.jsonl"):
        with pytest.raises(InvalidArgument, match="input"):
            manager.submit({"input": spec})


def test_same_idempotency_key_makes_one_job(manager, data_dir):
    write_jsonl(data_dir / "a.jsonl")
    request = {"input": str(data_dir / "a.jsonl"), "idempotency_key": "batch-2024-06-01"}
    before = len(manager.list(limit=1000))
    first = manager.submit(request)
    again = manager.submit(request)
    assert again.id == first.id
    assert len(manager.list(limit=1000)) == before + 1
    with pytest.raises(FailedPrecondition, match=first.id):
        manager.submit(request | {"top_k": 1})
    assert wait_finished(manager, first.id).state == "done"
    assert manager.submit(request).state == "done"


def test_a_job_redis_lost_answers_failed_and_its_files_are_removed(manager, corpus_dir, data_dir):
    write_jsonl(data_dir / "a.jsonl")
    done = wait_finished(manager, manager.submit({"input": str(data_dir / "a.jsonl")}).id)
    running = manager.submit({"input": str(corpus_dir), "chunk_size": 500})
    wait_for(lambda: manager.get(running.id).chunks_done >= 1, 60, "a chunk")
    store = manager.store
    for job_id in (done.id, running.id):  # what an empty restart does to these two jobs
        store.redis.delete(store.key(job_id), store.chunks_key(job_id))
    assert manager.get(done.id).state == "done", "a finished job answers from its record"
    lost = manager.get(running.id)
    assert lost.state == "failed" and lost.error == RECORD_LOST and lost.input == str(corpus_dir)
    assert_no_partial_files(manager, running.id, timeout=30)
    never = "0" * 32
    with pytest.raises(NotFound):
        manager.get(never)
