"""The gateway's typed settings: the shared backend settings and limits, plus its front ends,
batching and security. Read once from the environment (prefix ``NEWSCLF_``) and passed down."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from scoring.settings import BackendSettings, CommaList, Limits, split_commas


class GatewaySettings(BackendSettings, Limits):
    """The gateway's front ends, limits, batching and security."""

    host: str = "127.0.0.1"
    grpc_port: int = 8600
    http_port: int = 8080
    grpc_workers: int = 64
    # Processes serving gRPC on the one port (SO_REUSEPORT; the kernel spreads connections over
    # them), each with its own copy of the models: one Python process is held to about one core
    # by its interpreter lock (docs/gateway.md).  HTTP and /metrics stay in the first process.
    grpc_processes: int = Field(default=1, ge=1, le=32)
    max_request_bytes: int = 16 * 1024 * 1024
    request_timeout_s: float = 30.0
    batch_max_size: int = 64
    batch_max_delay_ms: float = 2.0
    # Backend calls per model at the same time in each process; unset: 2 with one gRPC process,
    # 1 with several (their calls already run side by side; bigger batches per call pay more).
    batch_concurrency: int | None = Field(default=None, ge=1)
    # What one model call, and one of its time steps, cost beyond its texts, in token steps (one
    # text through one recurrent step): a merged batch is cut by length where that saves more
    # (docs/benchmarks.md, lengths); a call cost of 0 never cuts.
    # measured: gru 85 and 45, bilstm 187 and 20 (python -m bench.length_bench score)
    batch_split_call_cost: int = Field(default=100, ge=0)
    batch_split_step_cost: int = Field(default=30, ge=0)
    # Token bounds of the length classes a batch keeps to (requests by their longest text);
    # empty: one class.
    batch_length_classes: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [60, 150])
    max_queued_documents: int = 4096
    api_keys: CommaList = Field(default_factory=list)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    shutdown_drain_s: float = Field(default=5.0, ge=0)
    allow_open: bool = False
    metrics_auth: bool = False

    _split_keys = field_validator("api_keys", "batch_length_classes", mode="before")(split_commas)

    @field_validator("batch_length_classes")
    @classmethod
    def _positive_bounds(cls, bounds: list[int]) -> list[int]:
        if any(b < 1 for b in bounds):
            raise ValueError("length class bounds are token counts of at least 1")
        return sorted(set(bounds))

    @model_validator(mode="after")
    def _calls_and_threads(self) -> "GatewaySettings":
        if self.batch_concurrency is None:
            self.batch_concurrency = 2 if self.grpc_processes == 1 else 1
        self.share_cores(self.batch_concurrency * self.grpc_processes)
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> "GatewaySettings":
        # Half a TLS setup would silently serve plaintext on one transport or fail on first use.
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both NEWSCLF_TLS_CERT and NEWSCLF_TLS_KEY, or neither")
        return self

    @property
    def runs_open(self) -> bool:
        """True when clients beyond this machine could call the API without a key."""
        return not self.api_keys and not is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything
