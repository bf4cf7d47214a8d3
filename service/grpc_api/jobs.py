"""The ``newsclf.v1.Jobs`` servicer: message translation over ``jobs.manager.JobManager``."""

from __future__ import annotations

import grpc

from jobs.manager import JobManager
from jobs.model import Job
from service.grpc_api.errors import grpc_errors
from service.messages import from_dict, to_dict
from service.protos import jobs_pb2 as pb
from service.protos import jobs_pb2_grpc as pb_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["Jobs"]
SERVICE_NAME = SERVICE.full_name
DEFAULT_LIST = 50


def request_from_proto(message) -> dict:
    """The submit request as JobRequest fields; fields left empty mean "the server's default"."""
    return to_dict(message, defaults=False)


def job_to_proto(job: Job):
    return from_dict(job.model_dump(), pb.Job, ignore_unknown=True)


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
