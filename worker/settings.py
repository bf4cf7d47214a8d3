"""Typed settings of batch scoring, read once from the environment (prefix ``NEWSCLF_``).

``JobSettings`` is what the submitting side (gateway, CLI) needs; ``WorkerSettings`` adds the
model backend's settings for the Celery worker processes that score.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.settings import BackendSettings, CommaList, split_commas


class JobSettings(BaseSettings):
    """Where jobs are queued, which inputs they may read and where their results go."""

    model_config = SettingsConfigDict(env_prefix="NEWSCLF_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_s: float = 2.0
    queue: str = "newsclf-jobs"
    allowed_roots: CommaList = Field(default_factory=list)
    results_dir: Path = Path("results")
    scratch_dir: Path = Path("scratch")
    chunk_size: int = Field(default=1000, ge=1, le=100_000)
    batch_size: int = Field(default=64, ge=1, le=4096)
    max_chunks: int = Field(default=100_000, ge=1)
    default_model: str = "gru"
    default_top_k: int = Field(default=3, ge=1, le=46)
    job_ttl_s: int = 7 * 24 * 3600
    visibility_timeout_s: float = 3600.0
    restore_interval_s: float = 10.0
    chunk_time_limit_s: float = 1800.0
    max_chars: int = 100_000

    _split_roots = field_validator("allowed_roots", mode="before")(split_commas)

    @model_validator(mode="after")
    def _visibility_outlasts_chunks(self) -> "JobSettings":
        # A message not acked within the visibility timeout is handed to another worker; a
        # chunk allowed to run longer than that would be scored twice in parallel.
        if self.chunk_time_limit_s >= self.visibility_timeout_s:
            raise ValueError(
                f"chunk_time_limit_s ({self.chunk_time_limit_s}) must be shorter than "
                f"visibility_timeout_s ({self.visibility_timeout_s})")
        return self

    @property
    def roots(self) -> list[Path]:
        """Allowed input roots, resolved (symlinks followed) once."""
        return [Path(root).expanduser().resolve() for root in self.allowed_roots]


class WorkerSettings(JobSettings, BackendSettings):
    """Everything a worker process needs: the jobs side and the model backend."""

    model_config = SettingsConfigDict(env_prefix="NEWSCLF_", extra="ignore")

    model_load_timeout_s: float = Field(default=300.0, gt=0)
