"""What the gateway costs: in-process model calls vs the same model behind gRPC and HTTP.

One run, one model, at concurrency 1, 8 and 32 with one document per request: the embedded
backend called directly in this process, the gateway's core still in-process (validation and
micro-batching without a network), and the gateway (``python -m service serve``, a separate
process on loopback, settings from the environment) through the gRPC and HTTP client transports.
Prints the table and writes the ``gateway`` section of docs/benchmarks.md.

    python -m bench.gateway_bench --model-root models --model gru --requests 600
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench.common import REPO, add_model_arguments, latest_version
from bench.report import write_section
from scoring.backends.embedded import EmbeddedBackend
from scoring.settings import BackendSettings
from service.client.transport import GrpcTransport, HttpTransport
from service.core import ClassifierService, ClassifyRequest, Document
from service.settings import GatewaySettings
from tests.support.processes import free_port, stop_process
from training.layout import ModelRoot

TEXTS = 64          # distinct documents cycled through the requests
START_TIMEOUT_S = 180.0
TARGET_RATIO = 0.9
TARGET_P50_EXTRA_MS = 2.0
BASELINE = "in-process"
CORE = "in-process core"


@dataclass
class Run:
    mode: str
    concurrency: int
    requests: int
    seconds: float
    latencies_ms: np.ndarray

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


def load(call: Callable[[str], object], texts: list[str], requests: int, concurrency: int, mode: str) -> Run:
    """``requests`` calls of one document each, spread over ``concurrency`` threads."""
    latencies = np.zeros(requests)
    counter = iter(range(requests))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            started = time.perf_counter()
            try:
                call(texts[index % len(texts)])
            except Exception as exc:  # reported below; a failed request invalidates the figures
                errors.append(exc)
                return
            latencies[index] = (time.perf_counter() - started) * 1000

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{mode} at concurrency {concurrency}: {len(errors)} failed requests, "
                           f"first: {errors[0]!r}")
    return Run(mode, concurrency, requests, seconds, latencies)


class LeanGrpcClient:
    """A gRPC load generator that costs this machine little: each (model, text) request is
    serialised once, and answers are parsed by protobuf's C++ parser only.

    The product's client (``service.client``) converts through protobuf's JSON mapping both
    ways, about a millisecond of CPU per call here; on a 2-core machine that shares the cores
    with the gateway, that cost is taken from the gateway and flattens any difference between
    two gateways.  A client on another host, or one written in C++ or Go, costs the gateway's
    host nothing.

    With ``connections`` above 1, the calling threads take turns to claim one of that many
    channels of their own TCP connection each (grpc would otherwise share one connection
    between channels to the same address), as that many separate client programs would.
    """

    def __init__(self, address: str, timeout: float = 30.0, connections: int = 1):
        import grpc

        from service.grpc_api.classifier import SERVICE_NAME

        options = [("grpc.use_local_subchannel_pool", 1)]
        self.channels = [grpc.insecure_channel(address, options=options) for _ in range(max(1, connections))]
        self.timeout = timeout
        self._calls = [channel.unary_unary(f"/{SERVICE_NAME}/Classify") for channel in self.channels]  # bytes
        self._requests: dict[tuple[str, str], bytes] = {}
        self._local = threading.local()
        self._next = itertools.count()

    def classify(self, text: str, model: str, top_k: int = 3) -> int:
        """Score one text; returns the number of topics in the answer (it must hold one document)."""
        from service.protos import classifier_pb2 as pb

        request = self._requests.get((model, text))
        if request is None:
            request = self._requests[model, text] = pb.ClassifyRequest(
                documents=[pb.Document(text=text)], model=model, top_k=top_k).SerializeToString()
        call = getattr(self._local, "call", None)
        if call is None:
            call = self._local.call = self._calls[next(self._next) % len(self._calls)]
        response = pb.ClassifyResponse.FromString(call(request, timeout=self.timeout))
        if len(response.results) != 1:
            raise RuntimeError(f"{model}: {len(response.results)} results for one document")
        return len(response.results[0].topics)

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


def sample_texts(corpus: Path) -> list[str]:
    """Real newswire bodies from the corpus, so requests have realistic lengths."""
    from training.corpus import read_corpus

    texts = [doc.text for doc in read_corpus(corpus) if doc.text.strip()]
    step = max(1, len(texts) // TEXTS)
    return texts[::step][:TEXTS]


class GatewayProcess:
    """``python -m service serve`` on free loopback ports, with the embedded backend on ``root``."""

    def __init__(self, root: Path):
        self.grpc_port, self.http_port = free_port(), free_port()
        env = dict(os.environ, NEWSCLF_MODEL_ROOT=str(root), NEWSCLF_HOST="127.0.0.1",
                   NEWSCLF_GRPC_PORT=str(self.grpc_port), NEWSCLF_HTTP_PORT=str(self.http_port))
        env.pop("NEWSCLF_TFSERVING_ADDRESSES", None)
        self.log = tempfile.NamedTemporaryFile("w", prefix="gateway-bench-", suffix=".log", delete=False)
        self.process = subprocess.Popen([sys.executable, "-m", "service", "serve", "--no-jobs"], cwd=REPO,
                                        env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.http_port}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"gateway not ready within {START_TIMEOUT_S:.0f}s; see {self.log.name}")

    def stop(self) -> None:
        stop_process(self.process, timeout=30)
        self.log.close()


def run_all(root: Path, model: str, texts: list[str], requests: int, levels: list[int],
            rounds: int) -> list[Run]:
    """Every mode at each concurrency level in turn, ``rounds`` times, keeping each mode's median round.

    Interleaving the modes makes a change in machine load hit all of them alike.
    """
    gateway = GatewayProcess(root)  # starts loading while the in-process backend loads
    backend = EmbeddedBackend(BackendSettings(model_root=root), poll=False)
    core = ClassifierService(backend, GatewaySettings(model_root=root))
    http_local = threading.local()
    grpc_client = None
    try:
        backend.refresh()
        gateway.wait_ready()
        grpc_client = GrpcTransport(f"127.0.0.1:{gateway.grpc_port}")

        def over_http(text: str) -> object:
            if not hasattr(http_local, "client"):
                http_local.client = HttpTransport(f"127.0.0.1:{gateway.http_port}")
            return http_local.client.classify([{"text": text}], model, top_k=3)

        modes = {
            BASELINE: lambda t: backend.classify([t], model),
            CORE: lambda t: core.classify(ClassifyRequest([Document(t)], model, top_k=3)),
            "gateway gRPC": lambda t: grpc_client.classify([{"text": t}], model, top_k=3),
            "gateway HTTP": over_http,
        }
        for call in modes.values():  # first calls trace, allocate and connect; keep them out
            for text in texts[:16]:
                call(text)
        runs: list[Run] = []
        for level in levels:
            tries: dict[str, list[Run]] = {mode: [] for mode in modes}
            for _ in range(rounds):
                for mode, call in modes.items():
                    tries[mode].append(load(call, texts, requests, level, mode))
            for mode in modes:  # the median round, so one burst of load elsewhere does not decide
                runs.append(sorted(tries[mode], key=lambda r: r.throughput)[len(tries[mode]) // 2])
                print(_row(runs[-1], runs), flush=True)
        return runs
    finally:
        if grpc_client is not None:
            grpc_client.close()
        gateway.stop()
        core.close()
        backend.close()


def _same(runs: list[Run], mode: str, level: int) -> Run:
    return next(r for r in runs if r.mode == mode and r.concurrency == level)


def _row(run: Run, runs: list[Run]) -> str:
    base = _same(runs, BASELINE, run.concurrency).throughput
    core = next((r.throughput for r in runs if r.mode == CORE and r.concurrency == run.concurrency), None)
    versus_core = f"{run.throughput / core:.2f}" if core else "–"
    return (f"| {run.mode} | {run.concurrency} | {run.throughput:.0f} | {run.throughput / base:.2f} "
            f"| {versus_core} | {run.percentile(50):.2f} | {run.percentile(99):.2f} |")


def table(runs: list[Run]) -> str:
    lines = ["| mode | concurrency | req/s | × in-process | × in-process core | p50 ms | p99 ms |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    return "\n".join(lines + [_row(run, runs) for run in runs])


def verdicts(runs: list[Run]) -> list[str]:
    out = []
    for run in (r for r in runs if r.mode.startswith("gateway")):
        base = _same(runs, BASELINE, run.concurrency)
        ratio = run.throughput / base.throughput
        out.append(f"- {run.mode}, concurrency {run.concurrency}: throughput {ratio:.2f}× in-process "
                   f"(target ≥ {TARGET_RATIO}) — {'met' if ratio >= TARGET_RATIO else 'NOT met'}")
        if run.concurrency == 1:
            extra = run.percentile(50) - base.percentile(50)
            verdict = "met" if extra <= TARGET_P50_EXTRA_MS else "NOT met"
            out.append(f"- {run.mode}, single request: p50 {extra:+.2f} ms vs in-process "
                       f"(target ≤ +{TARGET_P50_EXTRA_MS} ms) — {verdict}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--requests", type=int, default=600, help="requests per mode and concurrency")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per row; the median round is reported")
    args = parser.parse_args(argv)

    root = ModelRoot(args.model_root)
    version = latest_version(parser, root, args.model)
    levels = [int(x) for x in args.concurrency.split(",")]
    meta = root.read_metadata(args.model, version)
    texts = sample_texts(args.corpus)
    print(f"model {args.model} v{version} (preset {meta.preset}), {args.requests} requests per row, "
          f"{len(texts)} corpus texts, one document per request", flush=True)
    load_before = os.getloadavg()[0]
    gateway_settings = GatewaySettings()
    runs = run_all(root.path, args.model, texts, args.requests, levels, args.rounds)
    report = "\n".join([
        "## Gateway overhead",
        "",
        f"`python -m bench.gateway_bench --model-root {args.model_root} --model {args.model} "
        f"--requests {args.requests} --concurrency {args.concurrency} --rounds {args.rounds}`",
        "",
        f"Model `{args.model}` v{version} (preset `{meta.preset}`), embedded backend, one document per "
        f"request, {args.requests} requests per row (median of {args.rounds} interleaved rounds), loopback. "
        "*in-process* calls the backend directly "
        "from threads (no batching: each call is one model run); *in-process core* adds the gateway's "
        "validation and micro-batching without a network; the *gateway* rows go through "
        "`python -m service serve` (a separate process; batching up to "
        f"{gateway_settings.batch_max_size} documents or {gateway_settings.batch_max_delay_ms} ms) with the "
        "client transports of `service.client`, client threads in the benchmark process. Above 1× at "
        "concurrency 8 and 32 is micro-batching merging concurrent requests into one model run. "
        f"Load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on a shared machine.",
        "",
        table(runs),
        "",
        *verdicts(runs),
    ])
    print()
    print(report)
    if not args.no_write:
        print(f"\nwrote {write_section('gateway', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
