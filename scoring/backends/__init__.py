"""Model backends behind one interface (``base.Backend``); ``create_backend`` picks one from settings."""

from __future__ import annotations

from scoring.backends.base import Backend
from scoring.settings import BackendSettings


def create_backend(settings: BackendSettings) -> Backend:
    """TF Serving when addresses are configured, otherwise the in-process embedded backend.

    Imports lazily so the embedded backend's TensorFlow and the TF Serving client's protos are
    only loaded by the processes that use them.
    """
    if settings.tfserving_addresses:
        from scoring.backends.tfserving import TFServingBackend
        return TFServingBackend(settings)
    from scoring.backends.embedded import EmbeddedBackend
    return EmbeddedBackend(settings)
