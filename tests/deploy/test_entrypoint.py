"""deploy/entrypoint.py, run as the images run it: ``NAME_FILE`` becomes ``NAME`` for the command
it then execs; a missing file is one clear line and exit 2, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.deploy.deployment import REPO

ENTRYPOINT = REPO / "deploy" / "entrypoint.py"
SHOW_ENV = "import json, os; print(json.dumps({k: v for k, v in os.environ.items() if k.endswith(('KEYS', 'URL', 'AUTH', '_FILE'))}))"


def run(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSCLF_", "FLOWER_"))}
    return subprocess.run([sys.executable, str(ENTRYPOINT), *argv], env={**base, **env},
                          capture_output=True, text=True, timeout=30)


def test_file_variables_become_settings(tmp_path):
    (tmp_path / "keys").write_text("key-1,key-2\n")
    (tmp_path / "auth").write_text("admin:pw")
    result = run({"NEWSCLF_API_KEYS_FILE": str(tmp_path / "keys"), "FLOWER_BASIC_AUTH_FILE": str(tmp_path / "auth"),
                  "OTHER_FILE": "/not/read"}, sys.executable, "-c", SHOW_ENV)
    assert result.returncode == 0, result.stderr
    env = json.loads(result.stdout)
    assert env["NEWSCLF_API_KEYS"] == "key-1,key-2", "one trailing newline is dropped"
    assert env["FLOWER_BASIC_AUTH"] == "admin:pw"
    assert "NEWSCLF_API_KEYS_FILE" not in env and env["OTHER_FILE"] == "/not/read"


def test_the_file_wins_over_a_default_and_says_so(tmp_path):
    (tmp_path / "url").write_text("redis://:pw@redis:6379/0")
    result = run({"NEWSCLF_REDIS_URL": "redis://redis:6379/0", "NEWSCLF_REDIS_URL_FILE": str(tmp_path / "url")},
                 sys.executable, "-c", SHOW_ENV)
    assert json.loads(result.stdout)["NEWSCLF_REDIS_URL"] == "redis://:pw@redis:6379/0"
    assert "NEWSCLF_REDIS_URL_FILE overrides NEWSCLF_REDIS_URL" in result.stderr


def test_the_settings_read_the_secret(tmp_path):
    """The gateway's own settings class, in the process the entrypoint execs."""
    (tmp_path / "keys").write_text("k1,k2\n")
    script = "from service.settings import GatewaySettings; print(GatewaySettings().api_keys)"
    result = run({"NEWSCLF_API_KEYS_FILE": str(tmp_path / "keys"), "PYTHONPATH": str(REPO)},
                 sys.executable, "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['k1', 'k2']"


def test_a_missing_file_is_one_line_and_exit_2(tmp_path):
    result = run({"NEWSCLF_API_KEYS_FILE": str(tmp_path / "absent")}, sys.executable, "-c", "print('ran')")
    assert result.returncode == 2 and "ran" not in result.stdout
    assert result.stderr.startswith("error: NEWSCLF_API_KEYS_FILE=") and result.stderr.count("\n") == 1
    assert "No such file" in result.stderr


def test_no_command_is_a_usage_error():
    result = run({})
    assert result.returncode == 2 and result.stderr.startswith("error: Usage:")
