"""``/v1/jobs``: submit, follow, cancel and list batch-scoring jobs (thin over JobManager).

Handlers are plain ``def``: the manager talks to Redis synchronously, so they run in the
server's thread pool.
"""

from __future__ import annotations

from fastapi import APIRouter, Query
from pydantic import BaseModel

from jobs.manager import JobManager
from jobs.model import STATES, Job, JobRequest
from service.http_api.encoding import UnicodeJSONRoute
from service.http_api.errors import documented


class JobsOut(BaseModel):
    jobs: list[Job]


def router(manager: JobManager) -> APIRouter:
    jobs = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=UnicodeJSONRoute)

    @jobs.post("", response_model=Job, status_code=202, summary="Queue a batch-scoring job",
               responses=documented(400, 403, 404, 413))
    def submit(body: JobRequest):
        return manager.submit(body)

    @jobs.get("/{job_id}", response_model=Job, summary="A job's state, progress and result files",
              responses=documented(404))
    def get(job_id: str):
        return manager.get(job_id)

    @jobs.delete("/{job_id}", response_model=Job, summary="Cancel a queued or running job",
                 responses=documented(404, 409))
    def cancel(job_id: str):
        return manager.cancel(job_id)

    @jobs.get("", response_model=JobsOut, summary="The newest jobs first",
              responses=documented(400))
    def list_jobs(limit: int = Query(50, ge=1, le=1000),
                  state: str | None = Query(None, description=f"one of {', '.join(STATES)}")):
        return JobsOut(jobs=manager.list(limit, state))

    return jobs
