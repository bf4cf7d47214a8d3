"""Service fixtures: writable model roots and the TF Serving protocol double on port 0."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.prediction_server import PredictionServer
from training.layout import ModelRoot


@pytest.fixture
def writable_model_root(tiny_model_root, tmp_path) -> ModelRoot:
    """A private copy of the tiny model root that a test may publish versions and labels into."""
    target = tmp_path / "models"
    shutil.copytree(tiny_model_root, target)
    return ModelRoot(target)


@pytest.fixture
def start_prediction_server():
    """Factory: ``start_prediction_server(root, **options)`` -> a started PredictionServer."""
    servers: list[PredictionServer] = []

    def start(root: Path | ModelRoot, **options) -> PredictionServer:
        path = root.path if isinstance(root, ModelRoot) else root
        server = PredictionServer(path, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace=0)


@pytest.fixture(scope="session")
def prediction_server(tiny_model_root):
    """One protocol double over the read-only tiny model root, shared by the session."""
    with PredictionServer(tiny_model_root) as server:
        yield server
