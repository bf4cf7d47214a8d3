"""``NEWSCLF_GRPC_PROCESSES``: several processes serve gRPC on one port, one ``/metrics`` counts
them all, a killed process is started again, and none outlives the gateway."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.processes import METRICS_PREFIX, STABLE_S, GrpcProcesses, metrics_folder
from service.protos import classifier_pb2 as pb
from service.protos import classifier_pb2_grpc as pb_grpc
from tests.support.processes import (HOST, REPO, connections_held, descendants, free_port, listening_sockets,
                                     service_env, wait_for)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXT = "crude oil prices rose as opec ministers met in vienna"
CONNECTIONS = 16


@dataclass
class Served:
    process: subprocess.Popen
    grpc_port: int
    http_port: int
    log: Path

    def others(self) -> list[int]:
        return [pid for pid in descendants(self.process.pid) if pid != self.process.pid]


def start(root: Path, folder: Path, **settings) -> Served:
    grpc_port, http_port = free_port(), free_port()
    env = service_env(model_root=root, host=HOST, grpc_port=grpc_port, http_port=http_port, grpc_processes=2,
                      shutdown_drain_s=0, shutdown_grace_s=5, **settings)
    log = folder / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "service", "serve", "--no-jobs"], cwd=REPO, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    served = Served(process, grpc_port, http_port, log)
    try:
        wait_for(lambda: _alive(served) and listening_sockets(grpc_port) == 2, 180, "two gRPC processes listening")
    except BaseException:
        stop(served)
        raise
    return served


def _alive(served: Served) -> bool:
    if served.process.poll() is not None:
        raise RuntimeError(f"the gateway exited with {served.process.returncode}: {served.log.read_text()}")
    return True


def stop(served: Served) -> None:
    """SIGKILL the gateway's processes, the extra ones first."""
    for pid in reversed(descendants(served.process.pid)):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    served.process.wait(timeout=30)


@contextmanager
def connections(port: int, count: int = CONNECTIONS):
    """``count`` channels open at once, each on its own TCP connection."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.insecure_channel(f"{HOST}:{port}", options=options) for _ in range(count)]
    try:
        yield [pb_grpc.ClassifierStub(channel) for channel in channels]
    finally:
        for channel in channels:
            channel.close()


def classify(stub) -> pb.ClassifyResponse:
    return stub.Classify(pb.ClassifyRequest(documents=[pb.Document(text=TEXT)], model="gru"), timeout=30)


def requests_counted(http_port: int) -> float:
    body = httpx.get(f"http://{HOST}:{http_port}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(body) if family.name == "newsclf_requests"
               for sample in family.samples if sample.name == "newsclf_requests_total")


@pytest.fixture(scope="module")
def served(tiny_model_root, tmp_path_factory):
    served = start(tiny_model_root, tmp_path_factory.mktemp("processes"))
    yield served
    stop(served)


def test_both_processes_answer_and_one_metrics_counts_them(served):
    before = requests_counted(served.http_port)
    with connections(served.grpc_port) as stubs:
        answers = [classify(stub) for stub in stubs for _ in range(4)]
        held = {pid: connections_held(pid, served.grpc_port) for pid in descendants(served.process.pid)}
    assert len(answers) == 4 * CONNECTIONS
    assert all(len(a.results) == 1 and a.results[0].topics for a in answers)
    assert len(held) == 2 and sum(held.values()) == CONNECTIONS, held
    assert all(held.values()), f"the kernel gave every connection to one process: {held}"
    assert requests_counted(served.http_port) - before == 4 * CONNECTIONS


def test_a_killed_process_is_started_again(served):
    (other,) = served.others()
    os.kill(other, signal.SIGKILL)
    wait_for(lambda: served.others() and served.others() != [other] and listening_sockets(served.grpc_port) == 2,
             120, "the killed gRPC process to be replaced")
    with connections(served.grpc_port) as stubs:
        assert all(classify(stub).results for stub in stubs)
    assert f"(pid {other}) exited with -9" in served.log.read_text()


def test_sigterm_stops_every_process(tiny_model_root, tmp_path):
    served = start(tiny_model_root, tmp_path)
    pids = descendants(served.process.pid)
    try:
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=60) == 0
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), 30, "every process to exit")
        assert listening_sockets(served.grpc_port) == 0
    finally:
        stop(served)


def test_the_extra_process_stops_when_the_first_is_killed(tiny_model_root, tmp_path):
    served = start(tiny_model_root, tmp_path)
    (other,) = served.others()
    try:
        served.process.kill()
        served.process.wait(timeout=30)
        wait_for(lambda: not Path(f"/proc/{other}").exists() or _zombie(other), 60, "the orphan to stop")
        assert listening_sockets(served.grpc_port) == 0
    finally:
        with suppress(ProcessLookupError):
            os.kill(other, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    with suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return True


def test_a_port_shared_by_another_process_is_refused(tiny_model_root):
    """Another program (or a second gateway) sharing the port would get half the connections."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = service_env(model_root=tiny_model_root, host=HOST, grpc_port=port, http_port=0, grpc_processes=2)
        result = subprocess.run([sys.executable, "-m", "service", "serve", "--no-jobs"], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=90)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (f"python -m service serve: error: gRPC cannot listen on "
                                                      f"{HOST}:{port}: address in use or not available")


def test_restart_pause_starts_at_one_second_and_doubles_while_exits_come_quickly(tmp_path):
    """The pauses a quickly exiting process gets: 1, 2, 4, 8 s; after a long run, 1 s again."""
    supervisor = GrpcProcesses(2, port=0, metrics_dir=tmp_path, jobs=False)
    child = supervisor._children[0]
    pauses = []
    for ran in (0, 0, 0, 0, STABLE_S + 1):
        child.process = subprocess.Popen([sys.executable, "-c", "pass"])
        child.process.wait()
        child.started, child.restart_at = time.monotonic() - ran, None
        before = time.monotonic()
        supervisor.watch()  # schedules the start again; the pause is not over, so nothing starts yet
        pauses.append(round(child.restart_at - before, 1))
    assert pauses == [1.0, 2.0, 4.0, 8.0, 1.0]


def test_metrics_folders_of_killed_gateways_are_removed(tmp_path):
    """A folder whose gateway is gone goes; one whose gateway still runs stays."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stale, live = (tmp_path / f"{METRICS_PREFIX}{p.pid}-x1" for p in (dead, alive))
        for folder in (stale, live):
            folder.mkdir()
            (folder / "counter_1.db").write_bytes(b"\0" * 64)
        mine = metrics_folder(tmp_path)
        assert not stale.exists() and live.exists()
        assert mine.is_dir() and mine.name.startswith(f"{METRICS_PREFIX}{os.getpid()}-")
    finally:
        alive.kill()
        alive.wait()
