"""The client side of both transports behind one interface that covers every call of the API.

Both return the HTTP API's JSON shapes (gRPC converts through ``service.messages``), so the
commands print the same thing whichever transport is chosen. Command modules reuse
``common_options`` as a parent parser and ``open_transport`` for the connection.
"""

from __future__ import annotations

import abc
import argparse
import json as json_module
from pathlib import Path
from urllib.parse import urlencode

import grpc
import urllib3
from google.protobuf import json_format

from service.auth import GRPC_METADATA_KEY, HTTP_HEADER
from service.messages import from_dict, to_dict
from service.protos import classifier_pb2, classifier_pb2_grpc, jobs_pb2, jobs_pb2_grpc

DEFAULT_ADDRESS = {"grpc": "localhost:8600", "http": "localhost:8080"}


class ClientError(Exception):
    """A failed call: the status code name (e.g. NOT_FOUND) and the server's message."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def common_options() -> argparse.ArgumentParser:
    """Connection options shared by every subcommand (use as ``parents=[common_options()]``)."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("connection")
    group.add_argument("--transport", choices=("grpc", "http"), default="grpc", help="default: grpc")
    group.add_argument("--address", help="host:port (default localhost:8600 for gRPC, localhost:8080 for HTTP)")
    group.add_argument("--api-key", help="API key, if the gateway requires one")
    group.add_argument("--tls", action="store_true", help="connect with TLS")
    group.add_argument("--ca-cert", type=Path, help="CA certificate to trust (PEM) with --tls")
    group.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")
    return parser


class Transport(abc.ABC):
    """Every call of the gateway's API, answered in the HTTP API's JSON shapes by either transport."""

    timeout: float

    @abc.abstractmethod
    def classify(self, documents: list[dict], model: str, top_k: int | None = None, version: int | None = None,
                 version_label: str | None = None) -> dict:
        """``documents`` are ``{"text", "id"}`` dicts; returns the ``/v1/classify`` JSON shape."""

    @abc.abstractmethod
    def models(self) -> dict:
        """The ``/v1/models`` JSON shape."""

    @abc.abstractmethod
    def submit_job(self, request: dict) -> dict:
        """Queue a job (``POST /v1/jobs`` body; None values mean the server's default)."""

    @abc.abstractmethod
    def get_job(self, job_id: str) -> dict:
        """A job's state and progress."""

    @abc.abstractmethod
    def cancel_job(self, job_id: str) -> dict:
        """Cancel a queued or running job; returns it."""

    @abc.abstractmethod
    def list_jobs(self, limit: int = 50, state: str | None = None) -> list[dict]:
        """The newest jobs, optionally only those in ``state``."""

    def close(self) -> None:
        pass

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class GrpcTransport(Transport):
    def __init__(self, address: str, api_key: str | None = None, tls: bool = False, ca_cert: Path | None = None,
                 timeout: float = 30.0):
        self.address = address
        self.timeout = timeout
        if tls:
            credentials = grpc.ssl_channel_credentials(ca_cert.read_bytes() if ca_cert else None)
            self.channel = grpc.secure_channel(address, credentials)
        else:
            self.channel = grpc.insecure_channel(address)
        self.metadata = ((GRPC_METADATA_KEY, api_key),) if api_key else ()
        self.classifier = classifier_pb2_grpc.ClassifierStub(self.channel)
        self.jobs = jobs_pb2_grpc.JobsStub(self.channel)

    def call(self, method, request):
        """Invoke a unary stub method with the deadline and key; raise ``ClientError`` on failure."""
        try:
            return method(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise ClientError(exc.code().name, exc.details() or "") from None

    @staticmethod
    def message(data: dict, message_class):
        """A request message from JSON-shaped ``data``; a value it cannot hold is the caller's error."""
        try:
            return from_dict(data, message_class)
        except json_format.ParseError as exc:
            raise ClientError("INVALID_ARGUMENT", str(exc)) from None

    def classify(self, documents, model, top_k=None, version=None, version_label=None):
        request = self.message({"documents": documents, "model": model, "top_k": top_k, "version": version,
                                "version_label": version_label}, classifier_pb2.ClassifyRequest)
        return to_dict(self.call(self.classifier.Classify, request))

    def models(self):
        return to_dict(self.call(self.classifier.ListModels, classifier_pb2.ListModelsRequest()))

    def submit_job(self, request):
        return to_dict(self.call(self.jobs.SubmitJob, self.message(request, jobs_pb2.SubmitJobRequest)))

    def get_job(self, job_id):
        return to_dict(self.call(self.jobs.GetJob, jobs_pb2.GetJobRequest(id=job_id)))

    def cancel_job(self, job_id):
        return to_dict(self.call(self.jobs.CancelJob, jobs_pb2.CancelJobRequest(id=job_id)))

    def list_jobs(self, limit=50, state=None):
        response = self.call(self.jobs.ListJobs, jobs_pb2.ListJobsRequest(limit=limit, state=state or ""))
        return to_dict(response)["jobs"]

    def close(self) -> None:
        self.channel.close()


class HttpTransport(Transport):
    """JSON over HTTP with urllib3: much less per-request CPU than higher-level clients,
    which matters when one process drives many concurrent requests (benchmarks, batch clients)."""

    def __init__(self, address: str, api_key: str | None = None, tls: bool = False, ca_cert: Path | None = None,
                 timeout: float = 30.0):
        scheme = "https" if tls else "http"
        self.base_url = (address if "://" in address else f"{scheme}://{address}").rstrip("/")
        self.timeout = timeout
        self.headers = {"content-type": "application/json", **({HTTP_HEADER: api_key} if api_key else {})}
        trust = {"ca_certs": str(ca_cert)} if ca_cert else {}
        self.http = urllib3.PoolManager(maxsize=4, retries=False, timeout=urllib3.Timeout(total=timeout), **trust)

    def request(self, method: str, path: str, json: object = None, params: dict | None = None,
                headers: dict | None = None) -> dict:
        """One HTTP call; error bodies ``{"error": {...}}`` become ``ClientError``."""
        url = self.base_url + path + (f"?{urlencode(params)}" if params else "")
        body = None if json is None else json_module.dumps(json).encode()
        try:
            response = self.http.request(method, url, body=body, headers={**self.headers, **(headers or {})})
        except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError) as exc:
            raise ClientError("UNAVAILABLE", f"cannot reach {self.base_url}: {exc}") from exc
        except urllib3.exceptions.TimeoutError as exc:
            raise ClientError("DEADLINE_EXCEEDED", f"no answer from {self.base_url} in {self.timeout}s") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ClientError("UNAVAILABLE", f"cannot reach {self.base_url}: {exc}") from exc
        try:
            answer = json_module.loads(response.data) if response.data else {}
        except ValueError:
            answer = {}
        if response.status >= 400:
            error = answer.get("error", {}) if isinstance(answer, dict) else {}
            raise ClientError(error.get("code", f"HTTP_{response.status}"),
                              error.get("message", response.data[:200].decode(errors="replace")))
        return answer

    def classify(self, documents, model, top_k=None, version=None, version_label=None):
        body = {"documents": documents, "model": model, "top_k": top_k, "version": version,
                "version_label": version_label}
        headers = {"X-Request-Timeout-Ms": str(int(self.timeout * 1000))}
        return self.request("POST", "/v1/classify", json={k: v for k, v in body.items() if v is not None},
                            headers=headers)

    def models(self):
        return self.request("GET", "/v1/models")

    def submit_job(self, request):
        return self.request("POST", "/v1/jobs", json={k: v for k, v in request.items() if v is not None})

    def get_job(self, job_id):
        return self.request("GET", f"/v1/jobs/{job_id}")

    def cancel_job(self, job_id):
        return self.request("DELETE", f"/v1/jobs/{job_id}")

    def list_jobs(self, limit=50, state=None):
        return self.request("GET", "/v1/jobs", params={"limit": limit} | ({"state": state} if state else {}))["jobs"]

    def close(self) -> None:
        self.http.clear()


def open_transport(args: argparse.Namespace) -> Transport:
    """The transport chosen by ``common_options`` flags."""
    cls = GrpcTransport if args.transport == "grpc" else HttpTransport
    return cls(args.address or DEFAULT_ADDRESS[args.transport], api_key=args.api_key, tls=args.tls,
               ca_cert=args.ca_cert, timeout=args.timeout)
