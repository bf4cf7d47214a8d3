"""The ``newsclf.v1.Jobs`` servicer: message translation over ``worker.jobs.JobManager``."""

from __future__ import annotations

import grpc

from service.grpc_api.errors import grpc_errors
from service.protos import load
from worker.jobs import Job, JobManager

pb = load("jobs_pb2")
pb_grpc = load("jobs_pb2_grpc")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Jobs"].full_name
DEFAULT_LIST = 50


def request_from_proto(message) -> dict:
    """The submit request as JobRequest fields; empty proto fields mean "server default"."""
    choice = message.WhichOneof("version_choice")
    return {
        "input": message.input,
        "format": message.format or "auto",
        "id_field": message.id_field or "id",
        "text_field": message.text_field or "text",
        "model": message.model or None,
        "version": message.version if choice == "version" else None,
        "version_label": message.version_label if choice == "version_label" else None,
        "top_k": message.top_k or None,
        "csv": message.csv,
        "chunk_size": message.chunk_size or None,
    }


def job_to_proto(job: Job):
    return pb.Job(**{key: value for key, value in job.model_dump().items() if value is not None})


class JobsServicer(pb_grpc.JobsServicer):
    def __init__(self, manager: JobManager):
        self.manager = manager

    def SubmitJob(self, request, context: grpc.ServicerContext):
        with grpc_errors(context):
            return job_to_proto(self.manager.submit(request_from_proto(request)))

    def GetJob(self, request, context: grpc.ServicerContext):
        with grpc_errors(context):
            return job_to_proto(self.manager.get(request.id))

    def CancelJob(self, request, context: grpc.ServicerContext):
        with grpc_errors(context):
            return job_to_proto(self.manager.cancel(request.id))

    def ListJobs(self, request, context: grpc.ServicerContext):
        with grpc_errors(context):
            jobs = self.manager.list(request.limit or DEFAULT_LIST, request.state or None)
            return pb.ListJobsResponse(jobs=[job_to_proto(job) for job in jobs])


def add_to_server(server: grpc.Server, manager: JobManager) -> list[str]:
    """Register the Jobs service; returns its full name for reflection."""
    pb_grpc.add_JobsServicer_to_server(JobsServicer(manager), server)
    return [SERVICE_NAME]

