"""A full results volume fails the job with the reason and gives the space back, on a real
(small) tmpfs filesystem, with a real `celery worker` subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from jobs.model import JobPaths
from tests.support.processes import wait_for
from tests.worker.helpers import wait_finished, worker_and_manager, worker_env

pytestmark = pytest.mark.integration

VOLUME_BYTES = 6 * 1024 * 1024  # the corpus's result parts fit (about 4 MiB); a merged copy beside them does not


@pytest.fixture(scope="module")
def small_volume(tmp_path_factory):
    """A 6 MiB tmpfs, mounted for this module (the tests run as root, like CI)."""
    mount = tmp_path_factory.mktemp("small-volume")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={VOLUME_BYTES}", "tmpfs", str(mount)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def cramped(redis_url, tiny_model_root, job_root, corpus_dir, small_volume):
    """A worker whose results folder is the small volume; scratch chunks stay on the big disk."""
    env = worker_env(redis_url + "/7", tiny_model_root, job_root, corpus_dir.resolve(),
                     results_dir=small_volume / "results")
    with worker_and_manager(env, job_root / "worker-cramped.log", "cramped") as both:
        yield both


@pytest.mark.slow
def test_a_merge_on_a_full_volume_fails_the_job_and_frees_the_volume(cramped, corpus_dir, small_volume):
    worker, manager = cramped
    job = manager.submit({"input": str(corpus_dir), "top_k": 3})
    job = wait_finished(manager, job.id, timeout=240)
    assert job.state == "failed", f"{job.state}: {job.error}"
    assert "No space left on device" in job.error, job.error
    paths = JobPaths.of(manager.settings, job.id)
    wait_for(lambda: not (paths.results / "parts").exists() and not paths.scratch.exists(), 30,
             "the parts and chunk files to be removed")
    leftovers = [p.name for p in paths.results.iterdir() if p.name.startswith(".")] if paths.results.exists() else []
    assert not leftovers, f"temporary files left behind: {leftovers}"
    usage = shutil.disk_usage(small_volume)
    assert usage.used < VOLUME_BYTES / 2, f"{usage.used} bytes still held on the volume"
    # The volume is usable again: a small job there succeeds.
    small = manager.submit({"input": str(corpus_dir / "reut2-000.sgm")})
    assert wait_finished(manager, small.id, timeout=120).state == "done"
    assert os.path.getsize(wait_finished(manager, small.id).results_path) > 0
    assert worker.proc.poll() is None
