"""Does the gateway's memory level off under a long mix of valid and invalid requests?

Starts ``python -m service serve`` (embedded backend, loopback) and sends a fixed-seed mix over
gRPC and HTTP from a few client threads: valid classifications of 1-8 documents, undecodable
protobuf, unknown model names never seen before, 10,000-character version labels, malformed JSON,
lone surrogates, and streams with a bad message inside. The gateway's RSS (``/proc/<pid>/status``)
is sampled after every slice of requests; the run passes when the growth over the second half is
a small fraction of the growth over the first. Writes the ``gateway-soak`` section of
docs/benchmarks.md.

    python -m bench.gateway_soak --model-root models --model gru --requests 20000
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import httpx

from bench.common import REPO, add_model_arguments, latest_version
from bench.gateway_bench import sample_texts
from bench.report import write_section
from service.protos import classifier_pb2 as pb
from tests.support.processes import free_port, service_env, stop_process, wait_for
from training.layout import ModelRoot

SEED = 11
CLIENTS = 4
SLICES = 20
START_TIMEOUT_S = 180.0
LEVEL_RATIO = 0.25  # second-half growth at most this share of the first half's (or under 8 MiB)
LEVEL_FLOOR_MIB = 8.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Mix:
    """One client's share of the mix: each call picks a kind from a seeded generator."""

    def __init__(self, seed: int, model: str, texts: list[str], grpc_port: int, http_port: int):
        self.rng = random.Random(seed)
        self.model, self.texts = model, texts
        self.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self.classify = self.channel.unary_unary("/newsclf.v1.Classifier/Classify")
        self.stream = self.channel.stream_stream("/newsclf.v1.Classifier/ClassifyStream")
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)

    def close(self) -> None:
        self.channel.close()
        self.http.close()

    def request(self, n_docs: int | None = None, **fields) -> pb.ClassifyRequest:
        n = n_docs or self.rng.randrange(1, 9)
        docs = [pb.Document(text=self.rng.choice(self.texts), id=str(self.rng.randrange(10**9))) for _ in range(n)]
        return pb.ClassifyRequest(model=self.model, documents=docs, **fields)

    def one(self) -> str:
        kind = self.rng.random()
        try:
            if kind < 0.25:
                self.classify(self.request().SerializeToString(), timeout=30)
                return "grpc ok"
            if kind < 0.45:
                body = {"model": self.model, "documents": [{"text": self.rng.choice(self.texts)}
                                                           for _ in range(self.rng.randrange(1, 9))]}
                return f"http {self.http.post('/v1/classify', json=body).status_code}"
            if kind < 0.55:
                junk = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 200)))
                self.classify(junk, timeout=30)
                return "grpc junk ok?"
            if kind < 0.62:
                name = f"m{self.rng.randrange(10**12)}"  # a model name never seen before
                self.classify(pb.ClassifyRequest(model=name, documents=[pb.Document(text="x")]).SerializeToString(),
                              timeout=30)
                return "grpc unknown ok?"
            if kind < 0.68:
                self.classify(self.request(1, version_label="v" * 10_000).SerializeToString(), timeout=30)
                return "grpc label ok?"
            if kind < 0.76:
                bodies = [b"{not json", b'{"model": "' + self.model.encode() + b'", "documents": [{"text": "x\\ud800"}]}',
                          b'{"model": "m' + str(self.rng.randrange(10**12)).encode() + b'", "documents": [{"text": "x"}]}',
                          b'{"documents": "no"}']
                response = self.http.post("/v1/classify", content=self.rng.choice(bodies),
                                          headers={"content-type": "application/json"})
                return f"http {response.status_code}"
            if kind < 0.84:
                response = self.http.post("/v1/classify", json={"model": self.model, "documents": [{"text": "x"}]},
                                          headers={"X-Request-Timeout-Ms": self.rng.choice(["nan", "0", "-1"])})
                return f"http {response.status_code}"
            messages = [self.request(2).SerializeToString(), b"\xff\xff\xff", self.request(1).SerializeToString()]
            answers = list(self.stream(iter(messages), timeout=30))
            return f"stream {len(answers)}"
        except grpc.RpcError as exc:
            return f"grpc {exc.code().name}"


def run(args: argparse.Namespace, texts: list[str]) -> tuple[list[tuple[int, float]], Counter]:
    grpc_port, http_port = free_port(), free_port()
    env = service_env(model_root=args.model_root, host="127.0.0.1", grpc_port=grpc_port, http_port=http_port,
                      shutdown_drain_s=0)
    server = subprocess.Popen([sys.executable, "-m", "service", "serve", "--no-jobs"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mixes = [Mix(SEED + i, args.model, texts, grpc_port, http_port) for i in range(CLIENTS)]
    outcomes: Counter = Counter()
    samples: list[tuple[int, float]] = []
    try:
        wait_for(lambda: _ready(http_port), START_TIMEOUT_S, "the gateway to become ready", step=0.2)
        samples.append((0, rss_mib(server.pid)))
        per_slice = args.requests // SLICES
        for done in range(per_slice, per_slice * SLICES + 1, per_slice):
            threads = [threading.Thread(target=lambda m=m: outcomes.update(m.one() for _ in range(per_slice // CLIENTS)))
                       for m in mixes]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            samples.append((done, rss_mib(server.pid)))
            print(f"{done:>7} requests  RSS {samples[-1][1]:8.1f} MiB", flush=True)
    finally:
        for mix in mixes:
            mix.close()
        stop_process(server, timeout=30)
    return samples, outcomes


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args(argv)
    root = ModelRoot(args.model_root)
    version = latest_version(parser, root, args.model)
    texts = sample_texts(args.corpus)
    started = time.monotonic()
    samples, outcomes = run(args, texts)
    elapsed = time.monotonic() - started
    half = samples[len(samples) // 2][1]
    first, second = half - samples[1][1], samples[-1][1] - half
    levelled = second <= max(LEVEL_FLOOR_MIB, LEVEL_RATIO * max(first, 0.0))
    server_errors = sum(n for o, n in outcomes.items() if "INTERNAL" in o or "UNKNOWN" in o or o.startswith("http 50"))
    rows = "\n".join(f"| {done:,} | {rss:.1f} |" for done, rss in samples)
    kinds = ", ".join(f"{kind} {count:,}" for kind, count in sorted(outcomes.items()))
    markdown = f"""## Gateway memory soak

`python -m bench.gateway_soak --model-root {args.model_root} --model {args.model} --requests {args.requests}`

Model `{args.model}` v{version} under `{args.model_root}`, embedded backend, `python -m service serve` on loopback,
{CLIENTS} client threads, {sum(outcomes.values()):,} requests in {elapsed:.0f} s with a fixed-seed mix: valid gRPC and
HTTP classifications of 1-8 documents, undecodable protobuf, never-seen model names, 10,000-character
version labels, malformed JSON, lone surrogates, bad `X-Request-Timeout-Ms`, and streams with a bad
message inside. RSS of the gateway process after each slice:

| requests | RSS MiB |
|---:|---:|
{rows}

Growth over the first half (after the first slice): {first:+.1f} MiB; over the second half: {second:+.1f} MiB
-> {"levels off" if levelled else "still growing"} (criterion: second half at most {LEVEL_RATIO:.0%} of the first,
or under {LEVEL_FLOOR_MIB:.0f} MiB). Server errors (INTERNAL, UNKNOWN, HTTP 500-502): {server_errors}.
Outcomes: {kinds}.
"""
    print(markdown)
    if not args.no_write:
        write_section("gateway-soak", markdown)
    return 0 if levelled and server_errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
