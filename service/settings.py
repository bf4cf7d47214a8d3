"""Typed settings, read once from the environment (prefix ``NEWSCLF_``) and passed down.

Lists are comma-separated in the environment, e.g.
``NEWSCLF_TFSERVING_ADDRESSES=tfserving-a:8500,tfserving-b:8500``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]


def split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class BackendSettings(BaseSettings):
    """Where models come from: the model root, and TF Serving when addresses are given."""

    model_config = SettingsConfigDict(env_prefix="NEWSCLF_", extra="ignore")

    model_root: Path = Path("models")
    tfserving_addresses: CommaList = Field(default_factory=list)
    tfserving_timeout_s: float = 10.0
    tfserving_retries: int = 3
    tfserving_backoff_s: float = 0.1
    max_message_bytes: int = 64 * 1024 * 1024
    model_poll_interval_s: float = 2.0

    _split = field_validator("tfserving_addresses", mode="before")(split_commas)

    @property
    def backend_kind(self) -> str:
        return "tfserving" if self.tfserving_addresses else "embedded"


class GatewaySettings(BackendSettings):
    """The gateway's front ends, limits, batching and security."""

    host: str = "0.0.0.0"
    grpc_port: int = 8600
    http_port: int = 8080
    grpc_workers: int = 64
    max_documents: int = 256
    max_chars: int = 100_000
    max_request_bytes: int = 16 * 1024 * 1024
    max_top_k: int = 46
    default_top_k: int = 3
    request_timeout_s: float = 30.0
    batch_max_size: int = 64
    batch_max_delay_ms: float = 2.0
    batch_concurrency: int = 2
    max_queued_documents: int = 4096
    api_keys: CommaList = Field(default_factory=list)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    shutdown_grace_s: float = 10.0

    _split_keys = field_validator("api_keys", mode="before")(split_commas)

    @model_validator(mode="after")
    def _tls_pair(self) -> "GatewaySettings":
        # Half a TLS setup would silently serve plaintext on one transport or fail on first use.
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both NEWSCLF_TLS_CERT and NEWSCLF_TLS_KEY, or neither")
        return self
