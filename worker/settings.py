"""The worker processes' typed settings: a job's settings plus the model backend's."""

from __future__ import annotations

from pydantic import Field

from jobs.settings import JobSettings
from scoring.settings import ENV, BackendSettings


class WorkerSettings(JobSettings, BackendSettings):
    """Everything a worker process needs: the jobs side and the model backend."""

    model_config = ENV

    model_load_timeout_s: float = Field(default=300.0, gt=0)
    # A job's calls hold 256 texts, where XLA gains nothing; compiling for its small calls (the
    # model check, a short last chunk) would cost each pool process half a minute of a core and
    # about 150 MiB per model.
    xla_max_batch: int = Field(default=0, ge=0)
