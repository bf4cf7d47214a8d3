"""`python -m service serve` refuses a startup it cannot make with one line on stderr, no traceback:
exit status 2 for wrong settings, 1 for a machine that will not let it listen."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from tests.support.processes import HOST, REPO, free_port, service_env

pytestmark = pytest.mark.integration

PREFIX = "python -m service serve: error: "
CONFIG_ERROR, RUNTIME_ERROR = 2, 1


def serve(*args: str, **settings) -> subprocess.CompletedProcess:
    env = service_env(**({"host": HOST, "grpc_port": 0, "http_port": 0} | settings))
    return subprocess.run([sys.executable, "-m", "service", "serve", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=90)


def error_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(PREFIX), result.stderr
    return last[len(PREFIX):]


@pytest.fixture(scope="module")
def other_key(tmp_path_factory):
    """A private key that belongs to no certificate here."""
    path = tmp_path_factory.mktemp("other") / "other.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-out", str(path)], check=True,
                   capture_output=True, timeout=60)
    return path


@pytest.fixture
def garbage_pem(tmp_path):
    path = tmp_path / "garbage.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    return path


@pytest.mark.parametrize("case", ["cert without key", "key without cert", "cert is a folder", "key missing",
                                  "not PEM", "key of another cert", "root missing", "root is a file",
                                  "bad number", "bad job setting", "open without keys"])
def test_wrong_settings_exit_2_with_one_line(case, tmp_path, tls_files, other_key, garbage_pem):
    cert, key = tls_files
    root = tmp_path / "models"
    root.mkdir()
    settings, expected = {
        "cert without key": ({"tls_cert": cert}, ["NEWSCLF_TLS_CERT and NEWSCLF_TLS_KEY"]),
        "key without cert": ({"tls_key": key}, ["NEWSCLF_TLS_CERT and NEWSCLF_TLS_KEY"]),
        "cert is a folder": ({"tls_cert": tmp_path, "tls_key": key},
                             [f"cannot read {tmp_path} (NEWSCLF_TLS_CERT)", "directory"]),
        "key missing": ({"tls_cert": cert, "tls_key": tmp_path / "nope.key"},
                        ["(NEWSCLF_TLS_KEY)", "No such file"]),
        "not PEM": ({"tls_cert": garbage_pem, "tls_key": key}, ["not a PEM certificate and its key"]),
        "key of another cert": ({"tls_cert": cert, "tls_key": other_key}, ["not a PEM certificate and its key"]),
        "root missing": ({"model_root": tmp_path / "nope"}, [f"model root {tmp_path / 'nope'}", "does not exist"]),
        "root is a file": ({"model_root": garbage_pem}, ["NEWSCLF_MODEL_ROOT", "is not a folder"]),
        "bad number": ({"grpc_port": "eighty"}, ["invalid settings: NEWSCLF_GRPC_PORT", "integer"]),
        "bad job setting": ({"chunk_size": 0}, ["invalid settings: NEWSCLF_CHUNK_SIZE"]),
        "open without keys": ({"host": "0.0.0.0"}, ["NEWSCLF_HOST=0.0.0.0", "NEWSCLF_API_KEYS", "NEWSCLF_ALLOW_OPEN"]),
    }[case]
    settings.setdefault("model_root", root)
    result = serve(*([] if case == "bad job setting" else ["--no-jobs"]), **settings)
    assert result.returncode == CONFIG_ERROR, result.stderr
    line = error_line(result)
    assert all(part in line for part in expected), line
    assert result.stderr.count("\n") == 1, result.stderr  # nothing else: it stopped before loading anything


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_port_in_use_exits_1_with_one_line(transport, tmp_path, tls_files):
    """Valid TLS files pass the checks; the port another process holds is what stops it."""
    cert, key = tls_files
    root = tmp_path / "models"
    root.mkdir()
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve("--no-jobs", model_root=root, tls_cert=cert, tls_key=key, **{f"{transport}_port": port})
    assert result.returncode == RUNTIME_ERROR, result.stderr
    line = error_line(result)
    assert f"{'gRPC' if transport == 'grpc' else 'HTTP'} cannot listen on {HOST}:{port}" in line, line


def test_running_open_needs_the_opt_in_and_warns(tmp_path):
    """With NEWSCLF_ALLOW_OPEN=true the gateway serves without keys beyond loopback, and says so."""
    root = tmp_path / "models"
    root.mkdir()
    env = service_env(host="0.0.0.0", grpc_port=free_port(), http_port=free_port(), model_root=root,
                      allow_open="true", shutdown_drain_s=0)
    server = subprocess.Popen([sys.executable, "-m", "service", "serve", "--no-jobs"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in server.stderr:
            lines.append(line)
            if "gateway up" in line:
                break
        server.send_signal(signal.SIGTERM)
        _, rest = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, "".join(lines) + rest
    assert any("WARNING" in line and "running open" in line for line in lines), lines
