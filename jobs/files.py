"""Files written by tasks that may run more than once, and job records: whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from jobs.model import Job, JobPaths


@contextmanager
def atomic_file(path: Path, mode: str = "w", durable: bool = True) -> Iterator[IO]:
    """Write ``path`` through a temporary file in the same folder and rename it into place, so
    a reader (or a redelivered task) sees either the whole file or none; ``durable`` also syncs
    it to disk first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        text = "b" not in mode
        with os.fdopen(fd, mode, encoding="utf-8" if text else None,
                       newline="" if text else None) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def json_line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def write_record(paths: JobPaths, job: Job, store: str) -> None:
    """Keep ``job`` on disk beside its results, so it can be answered for if Redis loses it;
    ``store`` names the job store it belongs to (folders may be shared by several)."""
    with atomic_file(paths.record) as out:
        out.write(json.dumps({"store": store, "job": job.model_dump()}, indent=1))


def read_record(paths: JobPaths) -> tuple[Job, str] | None:
    """The job as last written by a worker and its store's name, or None when there is no
    (readable) record."""
    try:
        data = json.loads(paths.record.read_bytes())
        return Job.model_validate(data["job"]), str(data["store"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
