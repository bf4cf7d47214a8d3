"""Typed settings shared by the gateway and the workers, read once from the environment
(prefix ``NEWSCLF_``) and passed down.

``Limits`` is the one home of what a document and an answer may be: the gateway and the batch
workers enforce the same ``NEWSCLF_MAX_CHARS`` and rank with the same top-k bounds.
``BackendSettings`` says where models come from. Lists are comma-separated in the environment,
e.g. ``NEWSCLF_TFSERVING_ADDRESSES=tfserving-a:8500,tfserving-b:8500``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from scoring.cores import available_cores

CommaList = Annotated[list[str], NoDecode]
ENV = SettingsConfigDict(env_prefix="NEWSCLF_", extra="ignore")


def split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Limits(BaseSettings):
    """Bounds on documents and answers, the same for API requests and batch jobs."""

    model_config = ENV

    max_documents: int = Field(default=256, ge=1)
    max_chars: int = Field(default=100_000, ge=1)
    max_top_k: int = Field(default=46, ge=1)
    default_top_k: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _default_within_max(self) -> "Limits":
        if self.default_top_k > self.max_top_k:
            raise ValueError(f"default_top_k ({self.default_top_k}) must not exceed max_top_k ({self.max_top_k})")
        return self

    def top_k(self, requested: int | None) -> int:
        """The top-k to answer with: ``requested``, or the default when it is None or 0.

        Raises ``ValueError`` outside 1..max_top_k; callers turn it into their own error.
        """
        top_k = requested or self.default_top_k
        if not 1 <= top_k <= self.max_top_k:
            raise ValueError(f"top_k must be between 1 and {self.max_top_k}, got {requested}")
        return top_k


class BackendSettings(BaseSettings):
    """Where models come from: the model root, and TF Serving when addresses are given."""

    model_config = ENV

    model_root: Path = Path("models")
    tfserving_addresses: CommaList = Field(default_factory=list)
    tfserving_timeout_s: float = 10.0
    tfserving_retries: int = 3
    tfserving_backoff_s: float = 0.1
    max_message_bytes: int = 64 * 1024 * 1024
    model_poll_interval_s: float = 2.0
    # Threads one TensorFlow op may use in the embedded backend; unset: the gateway gives each of
    # its concurrent model calls, and a worker each of its pool processes, its share of the cores
    # (``share_cores``); 0: TensorFlow's default (every core).
    tf_intra_op_threads: int | None = Field(default=None, ge=0)
    # Calls of at most this many texts run a recurrent export's numeric half compiled by XLA
    # in the embedded backend (about 3x less per call at gateway sizes; none for large calls);
    # 0: never.
    xla_max_batch: int = Field(default=32, ge=0)

    _split = field_validator("tfserving_addresses", mode="before")(split_commas)

    @property
    def backend_kind(self) -> str:
        return "tfserving" if self.tfserving_addresses else "embedded"

    def share_cores(self, concurrent_calls: int) -> None:
        """Unless set, give each of ``concurrent_calls`` model calls its share of the cores.

        Two calls with TensorFlow's default threads (every core each) oversubscribe a 2-core
        host and run slower together than one call at a time (docs/gateway.md).
        """
        if self.tf_intra_op_threads is None:
            self.tf_intra_op_threads = max(1, available_cores() // max(1, concurrent_calls))
