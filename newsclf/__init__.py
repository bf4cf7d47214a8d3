"""Generated protobuf and gRPC modules, one subpackage per ``protos/newsclf/*`` folder.

``newsclf.v1`` is the gateway's API; ``newsclf.tfserving`` the TF Serving messages the gateway
sends. ``scripts/build_protos.py`` writes them (they are not kept in git); import them through
``load`` so a checkout that has not run it yet says what to do.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BUILD_HINT = "run `python scripts/build_protos.py` to generate the Python modules from protos/"


def load(module: str) -> ModuleType:
    """Import a generated module, e.g. ``load("newsclf.v1.jobs_pb2")``."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(f"{__name__}."):
            raise ImportError(f"generated module {module} is missing: {BUILD_HINT}") from exc
        raise
