"""Several processes serving gRPC on one port, for a gateway that should use more than one core.

One Python process is held to about one core by its interpreter lock, however many threads
answer its calls; at concurrency 32 a single gateway leaves a quarter of a 2-core host idle
(docs/gateway.md, "gRPC processes").  With ``NEWSCLF_GRPC_PROCESSES=N`` the first process (the
one ``serve`` started: gRPC, HTTP, ``/metrics``, the job API) starts N-1 more that serve gRPC
only, each with its own backend and copy of the models, bound to the same port with
SO_REUSEPORT: the kernel gives each new connection to one of them.  Their metrics go to shared
files, so the first process's ``/metrics`` counts every process's requests.

The first process supervises the others: one that exits is started again (after a pause that
grows while it keeps failing); SIGTERM stops them together; and a process whose parent is gone
(killed with SIGKILL) stops by itself rather than keep the port.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

log = logging.getLogger(__name__)

COMMAND = "grpc-process"
RESTART_PAUSE_S = (1.0, 60.0)  # first and longest pause before starting an exited process again
STABLE_S = 30.0  # a process that ran this long before exiting is restarted after the first pause
METRICS_PREFIX = "newsclf-metrics-"


def metrics_folder(base: Path | None = None) -> Path:
    """A new folder for the processes' metrics files, named after this process.

    A gateway killed with SIGKILL cannot remove its folder, so folders whose process is gone (or
    that carry this process's own pid, left by an earlier life of a container) are removed first.
    """
    base = Path(base or tempfile.gettempdir())
    for old in base.glob(f"{METRICS_PREFIX}*-*"):
        pid = old.name[len(METRICS_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{os.getpid()}-", dir=base))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@dataclass
class _Child:
    index: int
    process: subprocess.Popen | None = None
    started: float = 0.0
    pause: float = RESTART_PAUSE_S[0]  # before the next start, should this one exit within STABLE_S
    restart_at: float | None = None


class GrpcProcesses:
    """The extra gRPC processes of one gateway: started, restarted when they exit, stopped."""

    def __init__(self, count: int, port: int, metrics_dir: Path, jobs: bool):
        self.port = port
        self.metrics_dir = metrics_dir
        self.jobs = jobs
        self._children = [_Child(i) for i in range(1, count)]

    def start(self) -> None:
        for child in self._children:
            self._spawn(child)

    def _spawn(self, child: _Child) -> None:
        command = [sys.executable, "-m", "service", COMMAND, "--port", str(self.port),
                   "--metrics-dir", str(self.metrics_dir), "--parent", str(os.getpid())]
        if not self.jobs:
            command.append("--no-jobs")
        child.process = subprocess.Popen(command)
        child.started, child.restart_at = time.monotonic(), None
        log.info("gRPC process %d started (pid %d)", child.index + 1, child.process.pid)

    def watch(self) -> None:
        """Start again each process that exited, once its pause is over; the first process calls
        it now and then, from the thread that later stops them."""
        now = time.monotonic()
        for child in self._children:
            process = child.process
            if child.restart_at is None and process is not None and process.poll() is not None:
                mark_process_dead(process.pid, str(self.metrics_dir))
                ran = now - child.started
                pause = RESTART_PAUSE_S[0] if ran >= STABLE_S else child.pause
                child.pause = min(pause * 2, RESTART_PAUSE_S[1])  # for the next exit, if it comes soon
                child.restart_at = now + pause
                log.warning("gRPC process %d (pid %d) exited with %s after %.0fs; starting it again in %.0fs",
                            child.index + 1, process.pid, process.returncode, ran, pause)
            if child.restart_at is not None and now >= child.restart_at:
                self._spawn(child)

    def signal_stop(self) -> None:
        """Ask every process to drain and stop (SIGTERM); ``wait`` collects them."""
        for child in self._children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        """Wait for the processes to exit; SIGKILL what is left after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for child in self._children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("gRPC process %d (pid %d) still running after %.0fs; killing it",
                            child.index + 1, child.process.pid, timeout)
                child.process.kill()
                child.process.wait()
            mark_process_dead(child.process.pid, str(self.metrics_dir))


def parent_gone(parent: int) -> bool:
    """True once the process that started this one has exited (this one was handed to init)."""
    return os.getppid() != parent
