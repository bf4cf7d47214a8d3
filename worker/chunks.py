"""A job's input cut into chunk files, and a chunk scored into result lines.

Chunk files are the unit of work and of redelivery: ``prepare`` writes them once, each
``score_chunk`` task reads one back, checks it holds what was written, and scores it in batches.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

from jobs.files import atomic_file, json_line
from jobs.model import Job, JobPaths
from jobs.readers import BadRecord, ReadOptions, Record, read_input, resolve_input
from scoring.backends.base import Backend
from scoring.errors import ResourceExhausted
from scoring.lengths import length_order
from worker.results import result_lines
from worker.settings import WorkerSettings

CANCEL_CHECK_S = 0.5


def read_options(job: Job, settings: WorkerSettings) -> ReadOptions:
    """How to read ``job``'s input, with the shared character limit and the input caps."""
    return ReadOptions(format=job.format, id_field=job.id_field, text_field=job.text_field,
                       max_chars=settings.max_chars, max_entry_bytes=settings.max_entry_bytes,
                       max_input_bytes=settings.max_input_bytes,
                       max_archive_entries=settings.max_archive_entries,
                       max_record_bytes=settings.max_record_bytes, max_depth=settings.max_depth,
                       max_input_files=settings.max_input_files,
                       scan_timeout_s=settings.input_scan_timeout_s)


def write_chunks(job: Job, paths: JobPaths, settings: WorkerSettings,
                 on_chunk: Callable[[int, int], None]) -> tuple[int, int, int]:
    """Split the input into chunk files of ``job.chunk_size`` records, calling ``on_chunk`` with
    each one's number and size once written; bad records go to errors.jsonl."""
    roots = settings.roots
    options = read_options(job, settings)
    items = read_input(resolve_input(job.input, roots, options), roots, options)
    docs = chunks = errors = 0
    records: list[Record] = []

    def flush() -> None:
        nonlocal docs, chunks, records
        _write_chunk(paths.chunk(chunks), records)
        on_chunk(chunks, len(records))
        docs, chunks, records = docs + len(records), chunks + 1, []

    with atomic_file(paths.errors_jsonl) as errors_out:
        for item in items:
            if isinstance(item, BadRecord):
                errors += 1
                errors_out.write(json_line({"id": item.id, "source": item.source, "reason": item.reason}))
                continue
            records.append(item)
            if len(records) == job.chunk_size:
                if chunks >= settings.max_chunks:
                    raise ResourceExhausted(f"input has more than {settings.max_chunks * job.chunk_size} "
                                            "documents; raise chunk_size or split the input")
                flush()
        if records:
            flush()
    return docs, chunks, errors


def _write_chunk(path: Path, records: list[Record]) -> None:
    """Scratch files are not synced: each chunk task checks it holds the records it was sent."""
    with atomic_file(path, durable=False) as out:
        out.writelines(json_line({"id": r.id, "text": r.text}) for r in records)


def read_chunk(chunk: Path, count: int) -> list[dict]:
    """The records of a chunk file; a count other than the one written means damage."""
    with chunk.open(encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    if len(records) != count:
        raise RuntimeError(f"{chunk.name} holds {len(records)} records, {count} were written: "
                           "the scratch folder was damaged")
    return records


def score_records(records: list[dict], job: Job, model: Backend, batch_size: int,
                  running: Callable[[], bool]) -> tuple[list[str] | None, int | None]:
    """Result lines of ``records`` in their order and the model version, or None when
    ``running()`` turns false.

    Records are scored in length order (batches of similar-length texts cost less) and their
    lines put back in input order.  ``running`` is asked at most every ``CANCEL_CHECK_S``, not
    per batch: a Redis round trip per batch costs more than a small model call.
    """
    lines: list[str] = [""] * len(records)
    version = None
    checked = time.monotonic()
    for batch in _batches(length_order([r["text"] for r in records]), batch_size):
        if time.monotonic() - checked > CANCEL_CHECK_S:
            if not running():
                return None, None
            checked = time.monotonic()
        result = model.classify([records[i]["text"] for i in batch], job.model, job.version, job.version_label)
        version = result.version
        for i, line in zip(batch, result_lines([records[i]["id"] for i in batch], result, job.top_k)):
            lines[i] = line
    return lines, version


def _batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch
