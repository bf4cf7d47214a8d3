"""Client side of both transports behind one small interface, returning the HTTP JSON shapes.

Other command modules (e.g. ``service.client.jobs``) reuse ``common_options`` as a parent
parser and ``open_transport`` for the connection (``.channel`` / ``.metadata`` for gRPC,
``.request(method, path, json=, params=)`` / ``.base_url`` for HTTP).
"""

from __future__ import annotations

import abc
import argparse
import json as json_module
from pathlib import Path
from urllib.parse import urlencode

import grpc
import urllib3

from service.auth import GRPC_METADATA_KEY, HTTP_HEADER

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
    timeout: float

    @abc.abstractmethod
    def classify(self, documents: list[dict], model: str, top_k: int | None = None, version: int | None = None,
                 version_label: str | None = None) -> dict:
        """``documents`` are ``{"text", "id"}`` dicts; returns the ``/v1/classify`` JSON shape."""

    @abc.abstractmethod
    def models(self) -> dict:
        """The ``/v1/models`` JSON shape."""

    def close(self) -> None:
        pass

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class GrpcTransport(Transport):
    def __init__(self, address: str, api_key: str | None = None, tls: bool = False, ca_cert: Path | None = None,
                 timeout: float = 30.0):
        from service.protos import classifier_pb2, classifier_pb2_grpc

        self.pb = classifier_pb2
        self.address = address
        self.timeout = timeout
        if tls:
            credentials = grpc.ssl_channel_credentials(ca_cert.read_bytes() if ca_cert else None)
            self.channel = grpc.secure_channel(address, credentials)
        else:
            self.channel = grpc.insecure_channel(address)
        self.metadata = ((GRPC_METADATA_KEY, api_key),) if api_key else ()
        self.stub = classifier_pb2_grpc.ClassifierStub(self.channel)

    def call(self, method, request):
        """Invoke a unary stub method with the deadline and key; raise ``ClientError`` on failure."""
        try:
            return method(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise ClientError(exc.code().name, exc.details() or "") from None

    def classify(self, documents, model, top_k=None, version=None, version_label=None):
        pb = self.pb
        request = pb.ClassifyRequest(model=model, top_k=top_k or 0,
                                     documents=[pb.Document(text=d["text"], id=d.get("id", "")) for d in documents])
        if version is not None:
            request.version = version
        if version_label is not None:
            request.version_label = version_label
        response = self.call(self.stub.Classify, request)
        return {"model": response.model, "version": response.version,
                "abstain_threshold": response.abstain_threshold if response.HasField("abstain_threshold") else None,
                "results": [{"id": r.id, "abstained": r.abstained,
                             "topics": [{"name": t.name, "probability": t.probability} for t in r.topics]}
                            for r in response.results]}

    def models(self):
        response = self.call(self.stub.ListModels, self.pb.ListModelsRequest())
        return {"models": [{
            "name": m.name, "ready": m.ready, "version_labels": dict(m.version_labels),
            "versions": [{"version": v.version, "state": v.state, "metrics": dict(v.metrics),
                          "variant": v.variant, "labels": list(v.labels),
                          "abstain_threshold": v.abstain_threshold if v.HasField("abstain_threshold") else None}
                         for v in m.versions]} for m in response.models]}

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

    def close(self) -> None:
        self.http.clear()


def open_transport(args: argparse.Namespace) -> Transport:
    """The transport chosen by ``common_options`` flags."""
    cls = GrpcTransport if args.transport == "grpc" else HttpTransport
    return cls(args.address or DEFAULT_ADDRESS[args.transport], api_key=args.api_key, tls=args.tls,
               ca_cert=args.ca_cert, timeout=args.timeout)
