"""A batch-scoring job: what a submitter asks for, its recorded state, and its files.

The states and task names here are the contract between the submitting side (gateway, CLI) and
the Celery workers; both read and write a job only through these types.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from jobs.readers import FORMATS, ReadOptions
from jobs.settings import JobSettings
from training.layout import LayoutError, check_model_name

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINAL_STATES = (DONE, FAILED, CANCELLED)
KEY_PREFIX = "newsclf:job:"
INDEX_KEY = "newsclf:jobs"
PREPARE_TASK = "newsclf.prepare"
CHUNK_TASK = "newsclf.score_chunk"
FINALIZE_TASK = "newsclf.finalize"
MAX_LIST = 1000
MAX_PATH_CHARS = 4096
RECORD_FILE = "job.json"
RECORD_LOST = ("the job store (Redis) lost this job's record (restarted without its data?); "
               "its partial results were discarded: submit it again")


def new_job_id(now: float | None = None) -> str:
    """32 hex digits: the submission time in milliseconds, then 20 random digits.

    The time lets a job whose record was lost be told apart from one that never existed.
    """
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis:012x}{uuid.uuid4().hex[:20]}"


def issued_at(job_id: str) -> float | None:
    """When ``job_id`` was issued (seconds since the epoch), or None for an id of another form."""
    if len(job_id) != 32:
        return None
    try:
        return int(job_id[:12], 16) / 1000
    except ValueError:
        return None


class JobRequest(BaseModel):
    """What a submitter asks for; everything but ``input`` has a default."""

    input: str = Field(min_length=1, max_length=MAX_PATH_CHARS)
    format: str = "auto"
    id_field: str = Field(default="id", min_length=1, max_length=256)
    text_field: str = Field(default="text", min_length=1, max_length=256)
    model: str | None = None
    version: int | None = Field(default=None, ge=1)
    version_label: str | None = None
    top_k: int | None = Field(default=None, ge=1)
    csv: bool = False
    chunk_size: int | None = Field(default=None, ge=1, le=100_000)
    idempotency_key: str | None = Field(default=None, max_length=256)

    @field_validator("input")
    @classmethod
    def _usable_path(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("input path contains a NUL byte")
        if not value.isprintable():
            raise ValueError("input path contains control characters")
        return value

    @field_validator("idempotency_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value and not value.isprintable():
            raise ValueError("idempotency_key contains control characters")
        return value or None

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        if value:
            try:
                check_model_name(value)
            except LayoutError as exc:
                raise ValueError(str(exc)) from exc
        return value or None

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in ("auto", *FORMATS):
            raise ValueError(f"unknown format {value!r}: use auto, {', '.join(FORMATS)}")
        return value

    @field_validator("version_label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        return value or None


class Job(BaseModel):
    """A job as stored in Redis, with its progress and where its files are."""

    id: str
    state: str
    input: str
    format: str = "auto"
    id_field: str = "id"
    text_field: str = "text"
    model: str
    version: int | None = None
    version_label: str | None = None
    model_version: int | None = None
    top_k: int
    csv: bool = False
    chunk_size: int
    docs_total: int = 0
    docs_done: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    errors: int = 0
    error: str = ""
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    read_s: float = 0.0
    score_s: float = 0.0
    merge_s: float = 0.0
    results_path: str = ""
    csv_path: str = ""
    errors_path: str = ""

    @property
    def read_options(self) -> ReadOptions:
        return ReadOptions(format=self.format, id_field=self.id_field, text_field=self.text_field)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def elapsed_s(self) -> float:
        """Seconds from submission to the end (or to now while it runs)."""
        return (self.finished_at or time.time()) - self.created_at

    @classmethod
    def from_redis(cls, fields: dict[str, str]) -> "Job":
        data = {key: (None if value == "" and key in _OPTIONAL else value)
                for key, value in fields.items()}
        data["csv"] = fields.get("csv") == "1"
        return cls.model_validate(data)


_OPTIONAL = {"version", "version_label", "model_version", "started_at", "finished_at"}


def to_redis(values: dict[str, object]) -> dict[str, str]:
    out = {}
    for key, value in values.items():
        if isinstance(value, bool):
            out[key] = "1" if value else "0"
        else:
            out[key] = "" if value is None else str(value)
    return out


@dataclass(frozen=True)
class JobPaths:
    """Deterministic file names of a job, shared by every worker process."""

    scratch: Path
    results: Path

    @classmethod
    def of(cls, settings: JobSettings, job_id: str) -> "JobPaths":
        return cls(settings.scratch_dir / job_id, settings.results_dir / job_id)

    def chunk(self, index: int) -> Path:
        return self.scratch / f"chunk-{index:06d}.jsonl"

    def part(self, index: int) -> Path:
        return self.results / "parts" / f"part-{index:06d}.jsonl"

    @property
    def record(self) -> Path:
        """The job as a worker last saw it; answers for the job if Redis loses it."""
        return self.results / RECORD_FILE

    @property
    def results_jsonl(self) -> Path:
        return self.results / "results.jsonl"

    @property
    def results_csv(self) -> Path:
        return self.results / "results.csv"

    @property
    def errors_jsonl(self) -> Path:
        return self.results / "errors.jsonl"


