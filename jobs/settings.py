"""Typed settings of batch jobs, read once from the environment (prefix ``NEWSCLF_``).

``JobSettings`` is what both sides of a job need (the submitter and the workers): Redis, the
queue, the allowed inputs and the caps on reading them, where files go, time limits and the
recovery of stalled jobs, and the shared ``Limits``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from scoring.settings import ENV, CommaList, Limits, split_commas


class JobSettings(Limits):
    """Where jobs are queued, which inputs they may read and where their results go."""

    model_config = ENV

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_s: float = 2.0
    queue: str = "newsclf-jobs"
    allowed_roots: CommaList = Field(default_factory=list)
    results_dir: Path = Path("results")
    scratch_dir: Path = Path("scratch")
    chunk_size: int = Field(default=4000, ge=1, le=100_000)
    batch_size: int = Field(default=256, ge=1, le=4096)
    max_chunks: int = Field(default=100_000, ge=1)
    default_model: str = "ensemble"  # the default served model (README)
    job_ttl_s: int = 7 * 24 * 3600
    # Caps on what one job may read (see docs/worker.md, "Input caps").
    max_entry_bytes: int = Field(default=1 << 30, ge=1)
    max_input_bytes: int = Field(default=16 << 30, ge=1)
    max_archive_entries: int = Field(default=100_000, ge=1)
    max_record_bytes: int = Field(default=4 << 20, ge=1024)
    max_depth: int = Field(default=32, ge=1)
    max_input_files: int = Field(default=100_000, ge=1)
    input_scan_timeout_s: float = Field(default=60.0, gt=0)
    # Time limits and recovery (see docs/worker.md, "Recovery").
    visibility_timeout_s: float = 1200.0
    restore_interval_s: float = 10.0
    chunk_time_limit_s: float = Field(default=600.0, gt=0)
    chunk_soft_time_limit_s: float | None = Field(default=None, ge=0)
    heartbeat_s: float = Field(default=5.0, gt=0)
    stall_after_s: float = Field(default=60.0, gt=0)
    sweep_interval_s: float = Field(default=15.0, gt=0)
    max_recoveries: int = Field(default=5, ge=0)

    _split_roots = field_validator("allowed_roots", mode="before")(split_commas)

    @model_validator(mode="after")
    def _visibility_outlasts_chunks(self) -> "JobSettings":
        # A message not acked within the visibility timeout is handed to another worker; a
        # chunk allowed to run longer than that would be scored twice in parallel.
        if self.chunk_time_limit_s >= self.visibility_timeout_s:
            raise ValueError(
                f"chunk_time_limit_s ({self.chunk_time_limit_s}) must be shorter than "
                f"visibility_timeout_s ({self.visibility_timeout_s})")
        # A live task beats every heartbeat_s; a job is stalled only after several missed beats.
        if self.stall_after_s < 3 * self.heartbeat_s:
            raise ValueError(f"stall_after_s ({self.stall_after_s}) must be at least 3 x heartbeat_s "
                             f"({self.heartbeat_s})")
        return self

    @property
    def soft_time_limit_s(self) -> float | None:
        """The soft limit of a task: 90 % of the hard one unless set; 0 turns it off."""
        if self.chunk_soft_time_limit_s is None:
            return self.chunk_time_limit_s * 0.9
        return self.chunk_soft_time_limit_s or None

    @property
    def roots(self) -> list[Path]:
        """Allowed input roots, resolved (symlinks followed) once."""
        return [Path(root).expanduser().resolve() for root in self.allowed_roots]
