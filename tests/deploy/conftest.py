"""Deployment fixtures: the compose model of the GPU and the CPU variant, resolved once by the
real ``docker-compose config`` (skipped, with the reason, only when the binary is missing)."""

from __future__ import annotations

import pytest

from tests.deploy.deployment import COMPOSE_CPU, COMPOSE_GPU, compose_config


@pytest.fixture(scope="session")
def gpu_config(tmp_path_factory) -> dict:
    return compose_config(COMPOSE_GPU, tmp_path_factory.mktemp("compose-gpu"))


@pytest.fixture(scope="session")
def cpu_config(tmp_path_factory) -> dict:
    return compose_config(COMPOSE_CPU, tmp_path_factory.mktemp("compose-cpu"))


@pytest.fixture(scope="session", params=["gpu", "cpu"])
def config(request) -> dict:
    """Each variant in turn: the wiring must hold in both."""
    return request.getfixturevalue(f"{request.param}_config")
