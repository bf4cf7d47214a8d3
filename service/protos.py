"""The generated gRPC modules of the gateway's API (``newsclf.v1``)."""

from __future__ import annotations

from newsclf import load

classifier_pb2 = load("newsclf.v1.classifier_pb2")
classifier_pb2_grpc = load("newsclf.v1.classifier_pb2_grpc")
jobs_pb2 = load("newsclf.v1.jobs_pb2")
jobs_pb2_grpc = load("newsclf.v1.jobs_pb2_grpc")
