"""``submit``, ``status``, ``wait``, ``cancel`` and ``jobs`` subcommands: batch jobs over gRPC or HTTP.

Both transports return the HTTP JSON shape of a job (``jobs.model.Job``), so the commands
print the same thing whichever is used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

from service.client.transport import ClientError, Transport, common_options, open_transport

FINAL_STATES = ("done", "failed", "cancelled")
BAR_WIDTH = 30


def wait(transport: Transport, job_id: str, interval: float = 1.0, max_wait: float | None = None,
         progress=None) -> dict:
    """Poll until the job finishes; ``progress(job)`` is called after every poll."""
    deadline = None if max_wait is None else time.monotonic() + max_wait
    while True:
        job = transport.get_job(job_id)
        if progress is not None:
            progress(job)
        if job["state"] in FINAL_STATES:
            return job
        if deadline is not None and time.monotonic() >= deadline:
            raise ClientError("DEADLINE_EXCEEDED", f"job {job_id} still {job['state']} after {max_wait}s")
        time.sleep(interval)


def progress_line(job: dict) -> str:
    total, done = job["docs_total"], job["docs_done"]
    fraction = done / total if total else 0.0
    filled = int(BAR_WIDTH * fraction)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return (f"[{bar}] {fraction:4.0%} {done:,}/{total:,} docs, chunks {job['chunks_done']}/"
            f"{job['chunks_total']}, {job['errors']} bad records, {job['state']}")


def print_progress(job: dict) -> None:
    end = "\n" if job["state"] in FINAL_STATES else ""
    print("\r" + progress_line(job), end=end, file=sys.stderr, flush=True)


def summary(job: dict) -> str:
    lines = [f"job {job['id']}: {job['state']}",
             f"  input   {job['input']} ({job['format']}), model {job['model']}"
             + (f" v{job['model_version']}" if job.get("model_version") else ""),
             f"  docs    {job['docs_done']:,}/{job['docs_total']:,} scored, {job['errors']} bad records, "
             f"chunks {job['chunks_done']}/{job['chunks_total']}"]
    if job["error"]:
        lines.append(f"  error   {job['error']}")
    for key in ("results_path", "csv_path", "errors_path"):
        if job.get(key):
            lines.append(f"  {key.replace('_path', ''):<7} {job[key]}")
    if job.get("finished_at") and job.get("created_at"):
        elapsed = job["finished_at"] - job["created_at"]
        rate = job["docs_done"] / elapsed if elapsed > 0 else 0.0
        lines.append(f"  took    {elapsed:.1f}s ({rate:,.0f} docs/s)")
    return "\n".join(lines)


def _show(job: dict, as_json: bool) -> None:
    print(json.dumps(job, indent=2) if as_json else summary(job))


def _exit_code(job: dict) -> int:
    return 0 if job["state"] == "done" else 1


def run_submit(args: argparse.Namespace) -> int:
    request = {"input": args.input, "format": args.format, "id_field": args.id_field,
               "text_field": args.text_field, "model": args.model, "version": args.version,
               "version_label": args.version_label, "top_k": args.top_k, "csv": args.csv or None,
               "chunk_size": args.chunk_size,
               "idempotency_key": args.idempotency_key or uuid.uuid4().hex}
    with open_transport(args) as transport:
        job = transport.submit_job(request)
        if not args.wait:
            print(job["id"] if not args.json else json.dumps(job, indent=2))
            return 0
        print(f"job {job['id']} queued", file=sys.stderr)
        job = wait(transport, job["id"], args.interval, progress=None if args.json else print_progress)
    _show(job, args.json)
    return _exit_code(job)


def _one_job(args: argparse.Namespace, call, exit_code=lambda job: 0) -> int:
    """Open the transport, run ``call(transport)`` for one job, print it, return ``exit_code(job)``."""
    with open_transport(args) as transport:
        job = call(transport)
    _show(job, args.json)
    return exit_code(job)


def run_status(args: argparse.Namespace) -> int:
    return _one_job(args, lambda transport: transport.get_job(args.job_id))


def run_wait(args: argparse.Namespace) -> int:
    progress = None if args.json else print_progress
    return _one_job(args, lambda transport: wait(transport, args.job_id, args.interval, args.max_wait, progress),
                    _exit_code)


def run_cancel(args: argparse.Namespace) -> int:
    return _one_job(args, lambda transport: transport.cancel_job(args.job_id))


def run_list(args: argparse.Namespace) -> int:
    with open_transport(args) as transport:
        jobs = transport.list_jobs(args.limit, args.state)
    if args.json:
        print(json.dumps(jobs, indent=2))
        return 0
    for job in jobs:
        print(f"{job['id']}  {job['state']:<9} {job['docs_done']:>8,}/{job['docs_total']:<8,} {job['input']}")
    return 0


def add_commands(subparsers) -> None:
    common = common_options()
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print the raw JSON job")
    polling = argparse.ArgumentParser(add_help=False)
    polling.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")

    submit = subparsers.add_parser(
        "submit", parents=[common, output, polling], help="queue a batch-scoring job over a server-side path",
        description="INPUT is an absolute path (file, folder or glob) on the server, under its allowed roots.")
    submit.add_argument("input", metavar="INPUT")
    submit.add_argument("--format", help="sgm, jsonl, csv or txt (default: by file extension)")
    submit.add_argument("--id-field", help="JSON Lines field / CSV column of the document id (default: id)")
    submit.add_argument("--text-field", help="JSON Lines field / CSV column of the text (default: text)")
    submit.add_argument("--model", help="model name (default: the server's)")
    version = submit.add_mutually_exclusive_group()
    version.add_argument("--version", type=int, help="pin a model version")
    version.add_argument("--version-label", help="pin a version label, e.g. stable")
    submit.add_argument("--top-k", type=int, help="topics per document (default: the server's)")
    submit.add_argument("--csv", action="store_true", help="also write results.csv")
    submit.add_argument("--chunk-size", type=int, help="documents per worker task (default: the server's)")
    submit.add_argument("--idempotency-key", help="the same key again returns the job it first created "
                        "(default: a fresh key per command, so one command never queues two jobs)")
    submit.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
    submit.set_defaults(func=run_submit)

    status = subparsers.add_parser("status", parents=[common, output], help="show a job's state and progress")
    status.add_argument("job_id", metavar="JOB_ID")
    status.set_defaults(func=run_status)

    wait = subparsers.add_parser("wait", parents=[common, output, polling],
                                 help="follow a job with a progress bar until it ends (exit 1 unless done)")
    wait.add_argument("job_id", metavar="JOB_ID")
    wait.add_argument("--max-wait", type=float, help="give up after this many seconds")
    wait.set_defaults(func=run_wait)

    cancel = subparsers.add_parser("cancel", parents=[common, output], help="cancel a queued or running job")
    cancel.add_argument("job_id", metavar="JOB_ID")
    cancel.set_defaults(func=run_cancel)

    jobs = subparsers.add_parser("jobs", parents=[common], help="list the newest jobs")
    jobs.add_argument("--state", help="only jobs in this state (queued, running, done, failed, cancelled)")
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--json", action="store_true", help="print the raw JSON jobs")
    jobs.set_defaults(func=run_list)
