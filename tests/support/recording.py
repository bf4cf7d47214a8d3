"""The real embedded backend for tests that look at how texts reach it, and a wrapper that notes
the texts of every call (what was batched with what)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from scoring.backends import create_backend
from scoring.backends.base import Backend
from scoring.settings import BackendSettings


@contextlib.contextmanager
def embedded_backend(model_root: Path) -> Iterator[Backend]:
    """The embedded backend on ``model_root``, every model loaded."""
    backend = create_backend(BackendSettings(model_root=model_root))
    backend.refresh()
    try:
        yield backend
    finally:
        backend.close()


class Recording:
    def __init__(self, backend: Backend):
        self.backend = backend
        self.calls: list[list[str]] = []

    def classify(self, texts, *args, **kwargs):
        self.calls.append(list(texts))
        return self.backend.classify(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.backend, name)
