"""What batch scoring through Celery costs: the whole corpus through 1 and 2 worker processes
against the same model called in-process.

One run: the in-process baseline reads the corpus with the job readers and scores it through the
embedded backend as a job scores its chunks; a private redis-server and three
real ``celery -A worker.celery_app worker`` subprocesses, each on its own queue (concurrency 1; 2;
and 2 with TensorFlow's default threads), score the same folder as a job, timed from submission to
the merged results file. The modes take turns round after round, so a shared machine's changing
load hits them alike; the median round is reported. Prints the table and writes the ``worker``
section of docs/benchmarks.md.

    python -m bench.worker_bench --model-root models --model gru
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import add_model_arguments, latest_version
from bench.report import write_section
from jobs.manager import JobManager
from jobs.readers import ReadOptions, Record, read_input, resolve_input
from jobs.settings import JobSettings
from scoring.backends import create_backend
from scoring.backends.base import Backend
from scoring.lengths import length_order
from scoring.settings import BackendSettings
from tests.support.processes import CeleryWorker, RedisServer, service_env, wait_for
from training.layout import ModelRoot

TARGET_RATIO = 0.8
START_TIMEOUT_S = 300.0
JOB_TIMEOUT_S = 1800.0
# (row, pool processes, extra environment): the last row shows what each process's share of the
# cores (worker.resources) is worth against TensorFlow's default of every core per process
MODES = (("1 worker process", 1, {}), ("2 worker processes", 2, {}),
         ("2 worker processes, TensorFlow's default threads", 2, {"NEWSCLF_TF_INTRA_OP_THREADS": "0"}))


def in_process(backend: Backend, model: str, corpus: Path, batch_size: int,
               chunk_size: int) -> tuple[float, float, int]:
    """(seconds to read and score, seconds scoring only, documents) in this process, scoring as a
    job's chunks are scored: each ``chunk_size`` texts in length order, in calls of ``batch_size``."""
    started = time.perf_counter()
    roots = [corpus]
    texts = [item.text for item in read_input(resolve_input(str(corpus), roots), roots, ReadOptions())
             if isinstance(item, Record)]
    scoring = time.perf_counter()
    for chunk_start in range(0, len(texts), chunk_size):
        chunk = texts[chunk_start:chunk_start + chunk_size]
        ordered = [chunk[i] for i in length_order(chunk)]
        for start in range(0, len(ordered), batch_size):
            backend.classify(ordered[start:start + batch_size], model)
    done = time.perf_counter()
    return done - started, done - scoring, len(texts)


class Workers:
    """A private redis-server and one celery worker per mode, each on its own queue."""

    def __init__(self, folder: Path, root: Path, corpus: Path, batch_size: int, chunk_size: int):
        self.redis = RedisServer(folder)
        self.workers: list[CeleryWorker] = []
        self.managers: dict[str, JobManager] = {}
        try:
            for number, (mode, concurrency, extra) in enumerate(MODES):
                settings = JobSettings(redis_url=f"{self.redis.url}/0", queue=f"bench-{number}",
                                       allowed_roots=[str(corpus)], results_dir=folder / "results",
                                       scratch_dir=folder / "scratch", batch_size=batch_size, chunk_size=chunk_size)
                self.managers[mode] = JobManager(settings)
                env = service_env(**(settings.model_dump() | {"allowed_roots": corpus, "model_root": root}))
                env = {k: v for k, v in env.items() if k != "NEWSCLF_TF_INTRA_OP_THREADS"} | extra
                self.workers.append(CeleryWorker(env, folder / f"worker-{number}.log", concurrency,
                                                 name=f"bench{number}"))
                self.workers[-1].wait_ready(START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    def job_seconds(self, mode: str, corpus: Path, model: str) -> tuple[float, int]:
        manager = self.managers[mode]
        job = manager.submit({"input": str(corpus), "model": model})
        wait_for(lambda: manager.get(job.id).finished, JOB_TIMEOUT_S, f"job {job.id}", step=0.05)
        job = manager.get(job.id)
        if job.state != "done":
            raise SystemExit(f"job {job.id} {job.state}: {job.error}")
        return job.finished_at - job.created_at, job.docs_done

    def close(self) -> None:
        for worker in self.workers:
            worker.stop(timeout=30)
        for manager in self.managers.values():
            manager.close()
        self.redis.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=JobSettings().batch_size)
    parser.add_argument("--chunk-size", type=int, default=JobSettings().chunk_size)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all modes; the median is reported")
    args = parser.parse_args(argv)

    root = ModelRoot(args.model_root)
    version = latest_version(parser, root, args.model)
    meta = root.read_metadata(args.model, version)
    corpus = args.corpus.resolve()
    print(f"model {args.model} v{version} (preset {meta.preset}), corpus {corpus}", flush=True)

    backend = create_backend(BackendSettings(model_root=root.path))
    wait_for(lambda: backend.ready(args.model), START_TIMEOUT_S, f"model {args.model}", step=0.05)
    backend.classify(["warm up"] * args.batch_size, args.model)
    baseline: list[tuple[float, float, int]] = []
    jobs: dict[str, list[tuple[float, int]]] = {mode: [] for mode, _, _ in MODES}
    with tempfile.TemporaryDirectory(prefix="worker-bench-") as tmp:
        workers = Workers(Path(tmp), root.path, corpus, args.batch_size, args.chunk_size)
        load_before = os.getloadavg()[0]
        try:
            for round_no in range(1, args.rounds + 1):
                baseline.append(in_process(backend, args.model, corpus, args.batch_size, args.chunk_size))
                for mode in jobs:
                    jobs[mode].append(workers.job_seconds(mode, corpus, args.model))
                print(f"round {round_no}: in-process {baseline[-1][0]:.2f}s, "
                      + ", ".join(f"{mode} {jobs[mode][-1][0]:.2f}s" for mode in jobs), flush=True)
        finally:
            workers.close()
            backend.close()
    load_after = os.getloadavg()[0]

    total_s = statistics.median(r[0] for r in baseline)
    model_s = statistics.median(r[1] for r in baseline)
    docs = baseline[0][2]
    rows = [("in-process: read + score", docs, total_s)]
    for mode, runs in jobs.items():
        rows.append((f"Celery job, {mode}", runs[0][1], statistics.median(r[0] for r in runs)))
    rate = {mode: n / s for mode, n, s in rows}
    base_rate = rate[rows[0][0]]
    table = ["| mode | documents | seconds | docs/s | × in-process |", "|---|---:|---:|---:|---:|"]
    table += [f"| {mode} | {n:,} | {s:.2f} | {rate[mode]:,.0f} | {rate[mode] / base_rate:.2f} |"
              for mode, n, s in rows]
    spread = "; ".join([f"in-process {', '.join(f'{r[0]:.2f}' for r in baseline)}"]
                       + [f"{mode} {', '.join(f'{r[0]:.2f}' for r in runs)}" for mode, runs in jobs.items()])
    one = rate[rows[1][0]] / base_rate
    verdict = (f"One worker process reaches {one:.2f}× in-process (target ≥ {TARGET_RATIO}×): "
               + ("met." if one >= TARGET_RATIO else "NOT met."))
    report = "\n".join([
        "## Batch scoring through Celery workers",
        "",
        f"`python -m bench.worker_bench --model-root {args.model_root} --model {args.model} "
        f"--batch-size {args.batch_size} --chunk-size {args.chunk_size} --rounds {args.rounds}`",
        "",
        f"Model `{args.model}` v{version} (preset `{meta.preset}`, max_length "
        f"{meta.settings.get('max_length', '?')}), the whole Reuters-21578 folder ({docs:,} documents with "
        "text; one story is empty). *in-process* reads the folder with the job readers and scores it "
        f"through the embedded backend in the benchmark's process as a job scores its chunks (each {args.chunk_size:,} "
        f"texts in length order, in calls of {args.batch_size}) "
        f"({model_s:.2f}s of it in the model). The *Celery job* rows submit the folder as a job to a "
        "private redis-server and a `celery -A worker.celery_app worker --concurrency N` subprocess: "
        f"reading into chunks of {args.chunk_size} (queued as they are written), one task per chunk, "
        "parts merged into one JSON Lines file; timed from submission to the job's `done`. Each pool "
        "process gets its share of the cores for TensorFlow (`NEWSCLF_TF_INTRA_OP_THREADS` unset); the "
        "last row's worker sets it to `0`, TensorFlow's default of every core per process. The modes "
        f"take turns for {args.rounds} rounds; each row is the median round. Load average (1 min) "
        f"{load_before:.1f} before, {load_after:.1f} after, on a shared {os.cpu_count()}-core machine.",
        "",
        *table,
        "",
        f"Seconds of every round, in order (the spread is the shared machine's): {spread}.",
        "",
        verdict,
    ])
    print()
    print(report)
    if not args.no_write:
        print(f"\nwrote {write_section('worker', report)}")
    return 0 if one >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
