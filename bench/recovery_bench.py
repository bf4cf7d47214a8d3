"""How long a job takes to move again after work was lost: a whole worker group killed with a
chunk in hand, Redis killed for a few seconds (appendonly, fsync every second, as deployed), a
chunk killed at its hard time limit.

A private redis-server and real ``celery -A worker.celery_app worker`` subprocesses score the
corpus with the deployed recovery settings (``WorkerSettings`` defaults: heartbeat, stall
threshold, sweep interval, visibility timeout). The same job run undisturbed in the same run is
the reference. Prints the table and writes the ``recovery`` section of docs/benchmarks.md.

    python -m bench.recovery_bench --model-root models --model gru
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from bench.common import add_model_arguments, latest_version
from bench.report import write_section
from jobs.manager import JobManager
from jobs.settings import JobSettings
from scoring.errors import Unavailable
from tests.support.processes import CeleryWorker, RedisServer, service_env, wait_for
from training.corpus import read_corpus
from training.layout import ModelRoot
from worker.settings import WorkerSettings

START_TIMEOUT_S = 300.0
JOB_TIMEOUT_S = 900.0
CHUNK_SIZE = 1000
HARD_LIMIT_S = 10.0
REDIS_OUTAGE_S = 5.0
HARD_LIMIT_LINE = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+): ERROR/MainProcess\] Hard time limit")


class Bench:
    """One redis-server with appendonly; workers are started and killed per scenario."""

    def __init__(self, folder: Path, root: Path, corpus: Path, model: str):
        self.folder, self.root, self.corpus, self.model = folder, root, corpus, model
        self.redis = RedisServer(folder, appendonly=True)
        self.workers: list[CeleryWorker] = []

    def settings(self, **extra) -> JobSettings:
        return JobSettings(redis_url=f"{self.redis.url}/0", allowed_roots=[str(self.corpus)],
                           results_dir=self.folder / "results", scratch_dir=self.folder / "scratch",
                           chunk_size=CHUNK_SIZE, **extra)

    def worker(self, name: str, **extra) -> CeleryWorker:
        env = service_env(**(self.settings(**extra).model_dump() | {"allowed_roots": self.corpus,
                                                                   "model_root": self.root}))
        worker = CeleryWorker(env, self.folder / f"worker-{name}.log", name=name)
        self.workers.append(worker)
        worker.wait_ready(START_TIMEOUT_S)
        return worker

    def submit(self, manager: JobManager, **request) -> str:
        return manager.submit({"input": str(self.corpus), "model": self.model} | request).id

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.redis.stop()


def check_exactly_once(job, expected: set[str]) -> None:
    """Exit unless every expected id is in the job's results or errors file exactly once."""
    counts: Counter = Counter()
    for path in (job.results_path, job.errors_path):
        with open(path, encoding="utf-8") as handle:
            counts.update(json.loads(line)["id"] for line in handle)
    if set(counts) != expected or set(counts.values()) != {1}:
        sys.exit(f"job {job.id}: {len(expected - set(counts))} ids missing, "
                 f"{sum(1 for n in counts.values() if n > 1)} twice")


def follow(manager: JobManager, job_id: str, since: float, expected: set[str],
           states=("done",)) -> tuple[object, float | None, float]:
    """Poll until the job ends: the job, seconds from ``since`` until the sweeper first re-queued
    its lost work (None if nothing had to be), and seconds until it ended. A done job must hold
    every ``expected`` id exactly once."""
    requeued = None
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            job = manager.get(job_id)
            row = manager.store.watched([job_id])[0]
        except Unavailable:
            time.sleep(0.1)
            continue
        if requeued is None and row is not None and row["recoveries"]:
            requeued = time.monotonic() - since
        if job.finished:
            ended = time.monotonic() - since
            if job.state not in states:
                sys.exit(f"job {job_id} ended {job.state}: {job.error}")
            if job.state == "done":
                check_exactly_once(job, expected)
            return job, requeued, ended
        time.sleep(0.1)
    sys.exit(f"job {job_id} not finished after {JOB_TIMEOUT_S}s")


def killed_at(worker: CeleryWorker) -> float:
    """When the worker's main process killed a task at its hard time limit (its log line), in
    seconds since the epoch."""
    match = HARD_LIMIT_LINE.search(worker.text())
    if match is None:
        sys.exit("no hard time limit in the worker's log")
    stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return stamp.astimezone().timestamp()


def _seconds(value: float | None) -> str:
    return "not needed" if value is None else f"{value:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    root = ModelRoot(args.model_root)
    version = latest_version(parser, root, args.model)
    preset = root.read_metadata(args.model, version).preset
    corpus = args.corpus.resolve()
    expected = {str(doc.newid) for doc in read_corpus(corpus)}
    defaults = WorkerSettings(model_root=root.path)
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="recovery-bench-") as tmp:
        bench = Bench(Path(tmp), root.path, corpus, args.model)
        try:
            manager = JobManager(bench.settings())
            first = bench.worker("first")

            started = time.monotonic()
            _, _, reference_s = follow(manager, bench.submit(manager), started, expected)
            print(f"undisturbed job: {reference_s:.1f}s", flush=True)
            rows.append(("nothing (reference: the same job undisturbed)", "–", f"{reference_s:.1f} s", "done"))

            job_id = bench.submit(manager)
            wait_for(lambda: manager.get(job_id).chunks_done >= 2, JOB_TIMEOUT_S, "two chunks", step=0.05)
            first.kill()
            killed = time.monotonic()
            bench.worker("second")
            job, requeued_s, done_s = follow(manager, job_id, killed, expected)
            print(f"whole worker killed: lost chunk re-queued after {requeued_s}s, done {done_s:.1f}s after "
                  "the kill", flush=True)
            rows.append(("whole worker group killed (SIGKILL) mid-chunk; a second worker started at once",
                         _seconds(requeued_s), f"{done_s:.1f} s after the kill", job.state))

            job_id = bench.submit(manager)
            wait_for(lambda: manager.get(job_id).chunks_done >= 2, JOB_TIMEOUT_S, "two chunks", step=0.05)
            time.sleep(1.1)
            bench.redis.kill()
            time.sleep(REDIS_OUTAGE_S)
            bench.redis.start()
            restarted = time.monotonic()
            job, requeued_s, done_s = follow(manager, job_id, restarted, expected, ("done", "failed"))
            print(f"redis killed {REDIS_OUTAGE_S:g}s: re-queued after {requeued_s}s, {job.state} {done_s:.1f}s "
                  "after the restart", flush=True)
            rows.append((f"Redis killed for {REDIS_OUTAGE_S:g} s mid-job (appendonly, fsync every second)",
                         _seconds(requeued_s), f"{done_s:.1f} s after the restart", job.state))

            for worker in bench.workers:
                worker.stop()
            limited = JobManager(bench.settings(queue="bench-limit"))
            limit = bench.worker("limit", queue="bench-limit", chunk_time_limit_s=HARD_LIMIT_S,
                                 chunk_soft_time_limit_s=0, batch_size=1)
            submitted = time.monotonic()
            job, _, total_s = follow(limited, bench.submit(limited, chunk_size=20_000), submitted, expected,
                                     ("failed",))
            after_s = job.finished_at - killed_at(limit)
            print(f"hard limit: failed {after_s:.2f}s after the kill, {total_s:.1f}s after submit: {job.error}",
                  flush=True)
            rows.append((f"a chunk killed at its hard time limit ({HARD_LIMIT_S:g} s)", "–",
                         f"{after_s:.2f} s after the kill ({total_s:.1f} s after submit)", "failed, with the reason"))
        finally:
            bench.close()
    table = ["| what was lost | lost work re-queued after | job ended | state |", "|---|---:|---:|---|"]
    table += [f"| {what} | {requeued} | {ended} | {state} |" for what, requeued, ended, state in rows]
    report = "\n".join([
        "## Recovery",
        "",
        (f"`python -m bench.recovery_bench --model-root {args.model_root} --model {args.model}` — the corpus "
         f"({CHUNK_SIZE:,}-document chunks) through one worker process with the deployed recovery settings:"),
        (f"heartbeat {defaults.heartbeat_s:g} s, stall threshold {defaults.stall_after_s:g} s, sweep every "
         f"{defaults.sweep_interval_s:g} s, visibility timeout {defaults.visibility_timeout_s:g} s (stated bound:"),
        "a job moves again within stall threshold + sweep interval of its last sign of life, see",
        "docs/worker.md). Every NEWID came out exactly once in each `done` job. Times count from the",
        "kill (worker) or the restart (Redis); the second worker's own start (model loading) is included.",
        f"Model: {args.model} v{version} (preset {preset}).",
        "",
        *table,
    ])
    print("\n" + report)
    if not args.no_write:
        print(f"\nwrote {write_section('recovery', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
