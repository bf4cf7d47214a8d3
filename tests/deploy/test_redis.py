"""The Redis service's command and health check, run by the real redis-server and redis-cli."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def compose_redis(gpu_config, tmp_path):
    """redis-server started with the compose file's arguments, on a unix socket in tmp_path."""
    command = gpu_config["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server/redis-cli not installed (scripts/setup.sh installs them)")
    socket = tmp_path / "redis.sock"
    proc = subprocess.Popen([binary, *command[1:], "--port", "0", "--unixsocket", str(socket),
                             "--dir", str(tmp_path), "--save", ""],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while not socket.exists():
        if proc.poll() is not None:
            pytest.fail(f"redis-server refused the compose arguments:\n{proc.stdout.read()}")
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    yield socket
    proc.terminate()
    proc.wait(timeout=20)


def cli(socket, *args: str) -> str:
    return subprocess.run(["redis-cli", "-s", str(socket), *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()


def test_redis_runs_with_the_compose_arguments(compose_redis):
    assert cli(compose_redis, "CONFIG", "GET", "maxmemory-policy").splitlines()[-1] == "noeviction"
    assert cli(compose_redis, "CONFIG", "GET", "appendonly").splitlines()[-1] == "yes"
    assert int(cli(compose_redis, "CONFIG", "GET", "maxmemory").splitlines()[-1]) == 2 * 1024 ** 3


def test_redis_healthcheck(gpu_config, compose_redis, tmp_path):
    kind, script = gpu_config["services"]["redis"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    here = script.replace("redis-cli", f"redis-cli -s {compose_redis}")
    assert subprocess.run(["sh", "-c", here], timeout=10).returncode == 0
    nowhere = script.replace("redis-cli", f"redis-cli -s {tmp_path / 'absent.sock'}")
    assert subprocess.run(["sh", "-c", nowhere], timeout=10, capture_output=True).returncode != 0
