"""The narrow interface every model backend implements.

The gateway core and the batch workers talk only to this; the embedded (in-process
SavedModel) and TF Serving backends are interchangeable behind it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from scoring.errors import InvalidArgument
from training.layout import ExportMetadata


@dataclass(frozen=True)
class ModelVersion:
    """One servable version and what its export says about itself."""

    name: str
    version: int
    metadata: ExportMetadata
    state: str = "AVAILABLE"

    @property
    def labels(self) -> list[str]:
        return self.metadata.labels


@dataclass(frozen=True)
class ModelInfo:
    """A model with its versions, newest last, and its version labels."""

    name: str
    versions: list[ModelVersion]
    version_labels: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendResult:
    """Probabilities ``[len(texts), n_labels]`` and which version produced them."""

    model: str
    version: int
    labels: list[str]
    probabilities: np.ndarray
    metadata: ExportMetadata


def check_call(texts: Sequence[str], version: int | None, version_label: str | None) -> None:
    """The arguments every backend refuses before it calls a model (``InvalidArgument``)."""
    if version is not None and version_label is not None:
        raise InvalidArgument("give a version or a version label, not both")
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise InvalidArgument("texts must be a list of strings")


class Backend(abc.ABC):
    """A source of topic probabilities for raw news text."""

    @abc.abstractmethod
    def classify(self, texts: Sequence[str], model: str, version: int | None = None,
                 version_label: str | None = None, timeout: float | None = None) -> BackendResult:
        """Score ``texts`` with ``model`` at ``version`` / ``version_label`` (newest if neither).

        Raises ``scoring.errors.NotFound`` for an unknown model or version, ``Unavailable`` when
        the backend cannot answer, ``DeadlineExceeded`` when ``timeout`` (seconds) passes.
        """

    @abc.abstractmethod
    def models(self) -> list[ModelInfo]:
        """Every model the backend can serve now."""

    @abc.abstractmethod
    def ready(self, model: str | None = None) -> bool:
        """True when ``model`` (or every known model) is loaded and can answer."""

    def close(self) -> None:
        """Release channels, threads and loaded models."""
