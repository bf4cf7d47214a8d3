"""Real processes for tests and benchmarks: free loopback ports, a private redis-server, `celery
worker` subprocesses, and waiting for them.

Failures raise plain exceptions (no pytest), so the benchmarks can start the same processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

import redis

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
WORKER_READY_S = 90.0

T = TypeVar("T")


def free_port(host: str = HOST) -> int:
    """A port nothing listens on now: the OS picks it for a socket that is closed again at once."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, what: str = "a condition",
             step: float = 0.02) -> T:
    """The predicate's first truthy value; ``TimeoutError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, and SIGKILL if it has not exited within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def descendants(pid: int) -> list[int]:
    """``pid`` and the processes it started, and theirs (Linux ``/proc``)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with suppress(OSError):
                todo += [int(child) for child in task.read_text().split()]
    return found


def _tcp_rows(port: int, state: str) -> list[list[str]]:
    """TCP sockets of this host whose local port is ``port``, in ``state`` ("0A" listening,
    "01" established), from ``/proc/net/tcp`` and ``tcp6`` (grpc listens on IPv6 sockets)."""
    rows = [line.split() for table in ("tcp", "tcp6") if Path(f"/proc/net/{table}").exists()
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]]
    return [row for row in rows if row[1].endswith(f":{port:04X}") and row[3] == state]


def listening_sockets(port: int) -> int:
    """Sockets listening on TCP ``port``: one per process sharing it with SO_REUSEPORT."""
    return len(_tcp_rows(port, "0A"))


def connections_held(pid: int, port: int) -> int:
    """Established connections to local TCP ``port`` whose socket process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    return sum(1 for row in _tcp_rows(port, "01") if row[9] in inodes)


def service_env(**settings: object) -> dict[str, str]:
    """This process's environment without any ``NEWSCLF_*`` variable, plus ``settings`` as
    ``NEWSCLF_<NAME>``: a child process sees exactly the settings it is given."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("NEWSCLF_")}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)})
    env.update({f"NEWSCLF_{key.upper()}": str(value) for key, value in settings.items()
                if value is not None})  # None: the setting's own default
    return env


class RedisServer:
    """A redis-server of our own on a free loopback port, logging to ``folder``: without
    persistence, or with ``appendonly`` (fsync every second, as deployed).

    ``kill`` (SIGKILL) and ``start`` again on the same port and folder let a test take it away
    mid-job: without appendonly it comes back empty, with it from its append-only file.
    """

    def __init__(self, folder: Path, timeout: float = 10.0, appendonly: bool = False):
        self.port = free_port()
        self.url = f"redis://{HOST}:{self.port}"
        self.folder = folder
        self.log = folder / "redis.log"
        self.timeout = timeout
        self.appendonly = appendonly
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self, appendonly: bool | None = None) -> None:
        if appendonly is not None:
            self.appendonly = appendonly
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.appendonly else \
            ["--appendonly", "no"]
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "", *persistence,
                 "--dir", str(self.folder)], stdout=out, stderr=subprocess.STDOUT)
        client = redis.Redis(host=HOST, port=self.port, socket_connect_timeout=0.5)
        try:
            wait_for(lambda: self._answers(client), self.timeout, "redis-server", step=0.05)
        except Exception:
            self.stop()
            raise
        finally:
            client.close()

    def _answers(self, client: redis.Redis) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log.read_text()}")
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.BusyLoadingError):
            return False

    def kill(self) -> None:
        """SIGKILL: nothing is flushed beyond what appendonly already wrote."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class CeleryWorker:
    """A `celery -A worker.celery_app worker` subprocess in its own session, logging to ``log``.

    Its own session (process group) lets a caller find its pool processes and kill them all.
    """

    def __init__(self, env: dict[str, str], log: Path, concurrency: int = 1, name: str = "w"):
        self.log = log
        self.concurrency = concurrency
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
                 "--concurrency", str(concurrency), "--pool", "prefork", "--without-mingle",
                 "--without-gossip", "--hostname", f"{name}@%h"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = WORKER_READY_S) -> None:
        """Until the main process is consuming and every pool process has loaded the models."""
        try:
            wait_for(self._ready, timeout, "the celery worker", step=0.1)
        except TimeoutError:
            raise TimeoutError(f"celery worker not ready after {timeout}s:\n{self.text()[-3000:]}") from None

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"celery worker exited with {self.proc.returncode}:\n{self.text()[-3000:]}")
        text = self.text()
        return " ready." in text and text.count("worker process ready") >= self.concurrency

    def pool_pids(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def kill(self) -> None:
        """SIGKILL the whole worker (main and pool processes): nothing gets to clean up."""
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL whatever of the group is left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        self.kill()
