"""The worker processes' typed settings: a job's settings plus the model backend's."""

from __future__ import annotations

from pydantic import Field

from jobs.settings import JobSettings
from scoring.settings import ENV, BackendSettings


class WorkerSettings(JobSettings, BackendSettings):
    """Everything a worker process needs: the jobs side and the model backend."""

    model_config = ENV

    model_load_timeout_s: float = Field(default=300.0, gt=0)
