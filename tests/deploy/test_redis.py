"""The Redis service's command and health check, with and without a password, run by the real
redis-server and redis-cli."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_client

from tests.deploy.deployment import COMPOSE_GPU, COMPOSE_SECRETS, REPO, compose_config

ENTRYPOINT = REPO / "deploy" / "entrypoint.py"

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(argv: list[str], port: int, tmp_path) -> subprocess.Popen:
    """``argv`` (a compose command) on a free loopback port, waiting until it listens."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            pytest.fail(f"redis-server refused its arguments:\n{proc.stdout.read()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)


def healthcheck(test: list[str], port: int, environment: dict[str, str]) -> int:
    """The compose health check as Docker runs it (``sh -c``), aimed at ``port``."""
    kind, script = test
    assert kind == "CMD-SHELL"
    here = script.replace("redis-cli", f"redis-cli -p {port}")
    env = {"PATH": os.environ["PATH"], **environment}
    return subprocess.run(["sh", "-c", here], env=env, timeout=10, capture_output=True).returncode


@pytest.fixture
def redis_binaries():
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server/redis-cli not installed (scripts/setup.sh installs them)")


def test_healthcheck_with_a_password(redis_binaries, tmp_path):
    """REDIS_PASSWORD in .env: redis-server requires it and the health check still passes,
    because compose hands it to redis-cli; a wrong or missing password fails the check."""
    config = compose_config(COMPOSE_GPU, tmp_path, "REDIS_PASSWORD=s3cret-pw\n")
    redis = config["services"]["redis"]
    assert redis["command"][redis["command"].index("--requirepass") + 1] == "s3cret-pw"
    port = free_port()
    proc = start_redis([*redis["command"], "--port", str(port), "--dir", str(tmp_path), "--save", ""],
                       port, tmp_path)
    try:
        environment = {k: str(v) for k, v in redis["environment"].items()}
        assert healthcheck(redis["healthcheck"]["test"], port, environment) == 0
        assert healthcheck(redis["healthcheck"]["test"], port, {"REDISCLI_AUTH": "wrong"}) != 0
        assert healthcheck(redis["healthcheck"]["test"], port, {}) != 0, "the check must need the password"
        client = redis_client.Redis.from_url(f"redis://:s3cret-pw@127.0.0.1:{port}/0", socket_timeout=5)
        assert client.ping()
        with pytest.raises(redis_client.AuthenticationError):
            redis_client.Redis(port=port, socket_timeout=5).ping()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_healthcheck_with_the_password_in_a_secret_file(redis_binaries, tmp_path):
    """deploy/compose.secrets.yml: the server and its health check read the secret file, and
    the URL file the apps read (through the entrypoint) reaches the same server."""
    config = compose_config(COMPOSE_SECRETS, tmp_path, f"SECRETS_DIR={tmp_path}\n")
    secrets = {name: Path(spec["file"]) for name, spec in config["secrets"].items()}
    assert all(path.parent == tmp_path for path in secrets.values())
    port = free_port()
    secret_dir = tmp_path / "run-secrets"
    secret_dir.mkdir()
    (secret_dir / "redis_password").write_text("file-pw\n")
    redis = config["services"]["redis"]
    shell, flag, script = redis["command"]
    assert (shell, flag) == ("sh", "-c") and "/run/secrets/redis_password" in script
    # `docker-compose config` keeps `$$` escaped; the container gets a single `$`.
    script = script.replace("$$", "$").replace("/run/secrets", str(secret_dir))
    proc = start_redis([shell, flag, f'{script} --port {port} --dir "{tmp_path}" --save ""'], port, tmp_path)
    try:
        test = [part.replace("$$", "$").replace("/run/secrets", str(secret_dir))
                for part in redis["healthcheck"]["test"]]
        assert healthcheck(test, port, {}) == 0
        (secret_dir / "redis_password").write_text("another\n")
        assert healthcheck(test, port, {}) != 0
        url_file = tmp_path / "redis_url"
        url_file.write_text(f"redis://:file-pw@127.0.0.1:{port}/0\n")
        for name in ("gateway", "worker", "flower"):
            environment = config["services"][name]["environment"]
            assert environment["NEWSCLF_REDIS_URL_FILE"] == "/run/secrets/redis_url"
            assert "redis_url" in [s["source"] for s in config["services"][name]["secrets"]]
        script = "import os, redis; print(redis.Redis.from_url(os.environ['NEWSCLF_REDIS_URL']).ping())"
        env = {**os.environ, "NEWSCLF_REDIS_URL": "redis://127.0.0.1:1/0", "NEWSCLF_REDIS_URL_FILE": str(url_file)}
        result = subprocess.run([sys.executable, str(ENTRYPOINT), sys.executable, "-c", script], env=env,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=20)
