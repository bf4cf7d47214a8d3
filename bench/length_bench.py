"""What recurrent work in proportion to real text length saves: training and scoring, before and after.

"Before" is what the product did until now: every text padded or cut to ``max_length`` in
training batches and in the serving graph, batches in input order.  "After" trains on
length-bucketed batches and serves a graph that cuts each batch to its longest text.  Both
sides are measured in the same run, from the same data and, for scoring, the same weights.

Each step is its own command, so each fits in one turn of a shared machine's CPU lock; the
figures go to ``docs/figures/lengths/*.json`` (kept in git, so the report can be written again
without training again) and ``report`` writes the ``lengths`` sections of docs/benchmarks.md::

    python -m bench.length_bench train --variant gru --seed 1
    python -m bench.length_bench export --variant gru      # both graphs of one model, for `score`
    python -m bench.length_bench score --variant gru
    python -m bench.length_bench report
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_CORPUS, REPO
from bench.report import write_section
from jobs.settings import JobSettings

WORK = REPO / "runs" / "length-bench"
FIGURES = REPO / "docs" / "figures" / "lengths"
VARIANTS = ("gru", "bilstm")
FIXED_SUFFIX = "-fixed"
TRAIN_EPOCHS = 12
TARGET_TRAIN = 1.5
TARGET_IN_PROCESS = 2.0
TARGET_ABS_DIFF = 1e-5
SHORT_TOKENS, LONG_TOKENS = 50, 300
BEFORE_BATCH = 64  # a job's texts per model call until length-ordered calls made larger ones pay


def _save(work: Path, name: str, figures: dict) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    print(f"wrote {path}")
    return path


def _load_all(work: Path, prefix: str) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(work.glob(f"{prefix}-*.json"))]


# -- training -----------------------------------------------------------------------------------

def cmd_train(args) -> int:
    """Train ``variant`` with the default preset twice from one seed: fixed-length, then bucketed.

    With the preset's own epochs and no ``--set``, the bucketed run *is* the training
    benchmark's run of (variant, seed): it is trained, exported and kept in ``--state`` (or
    reused from there), so one run serves both tables.
    """
    import tempfile

    from bench.training_bench import State, train_one
    from training.dataset import load
    from training.layout import ModelRoot
    from training.presets import preset
    from training.train import train_variant

    data = load(args.corpus)
    overrides = {"epochs": args.epochs, **dict(item.split("=", 1) for item in args.set)}
    shared = not args.set and args.epochs == preset("default", args.variant).epochs
    figures: dict = {"variant": args.variant, "seed": args.seed, "epochs": args.epochs,
                     "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="length-bench-") as tmp:
        root = ModelRoot(tmp)
        for mode, buckets in (("fixed", False), ("bucketed", True)):
            settings = preset("default", args.variant, **overrides, length_buckets=buckets)
            print(f"== {args.variant} seed {args.seed}: {mode} batches, {args.epochs} epochs", flush=True)
            if buckets and shared:
                state = State(args.state)
                kept = state.get(args.variant, args.seed) or train_one(
                    args.variant, args.seed, data, state, {}, args.cache_dir)
                state.put(args.variant, args.seed, kept)
                bench_root = state.root(args.seed)
                meta = bench_root.read_metadata(args.variant, kept["version"])
            else:
                result = train_variant(data, args.variant, settings, root, preset="default", seed=args.seed,
                                       cache_dir=args.cache_dir, verbose=2)
                meta = result.metadata
            if not buckets:
                fixed = result
            figures[mode] = {
                "steady_epoch_seconds": meta.metrics["steady_seconds_per_epoch"],
                "val_accuracy": meta.metrics["val_accuracy"],
                "epochs_run": int(meta.metrics["epochs_run"]),
            }
            print(f"   {mode}: {figures[mode]['steady_epoch_seconds']:.1f} s/epoch, "
                  f"val accuracy {meta.metrics['val_accuracy']:.4f}", flush=True)
        if args.export:  # the fixed-length run's weights: what a call costs does not depend on them
            _export_both(data, fixed, settings, args.seed, ModelRoot(args.work / "models"))
    figures["load_after"] = os.getloadavg()[0]
    _save(args.figures, f"train-{args.variant}-{args.seed}", figures)
    return 0


def cmd_export(args) -> int:
    """Train ``variant`` briefly with the default preset and export both graphs for ``score``.

    What a call costs depends on the graph, not on the weights, so a short run is enough for
    the scoring rows; it writes no training figures.
    """
    import tempfile

    from training.dataset import load
    from training.layout import NGRAM, ModelRoot
    from training.ngrams import train_ngram
    from training.presets import preset
    from training.train import train_variant

    data = load(args.corpus)
    settings = preset("default", args.variant, epochs=args.epochs)
    models = ModelRoot(args.work / "models")
    with tempfile.TemporaryDirectory(prefix="length-bench-") as tmp:
        result = train_variant(data, args.variant, settings, ModelRoot(tmp), preset="default", seed=args.seed,
                               cache_dir=args.cache_dir, verbose=2)
        _export_both(data, result, settings, args.seed, models)
    if models.latest(NGRAM) is None:  # the gateway's reference without recurrent work
        train_ngram(data, preset("default"), models, preset="default", seed=args.seed)
    return 0


def _export_both(data, result, settings, seed: int, models) -> None:
    """The trained model as ``<variant>`` (batch-longest padding) and ``<variant>-fixed`` (max_length)."""
    from training.export import PAD_TO_LONGEST, PAD_TO_MAX_LENGTH, export_savedmodel, write_serving_model

    _, val = data.validation_split(settings.val_fraction, seed)
    meta = result.metadata
    for suffix, pad_to in (("", PAD_TO_LONGEST), (FIXED_SUFFIX, PAD_TO_MAX_LENGTH)):
        name = meta.model + suffix

        def write(path: Path, pad_to: str = pad_to) -> None:
            write_serving_model(path, result.encoder, result.classifier, meta.temperature, pad_to=pad_to)

        exported = export_savedmodel(models, name, write, meta.model_copy(update={"model": name, "version": 0}),
                                     validation=(val.texts(settings.text), val.y),
                                     test=(data.test.texts(settings.text), data.test.y))
        print(f"exported {name}/{exported.version} (padding to {pad_to})", flush=True)


# -- scoring ------------------------------------------------------------------------------------

def _score(backend, model: str, texts: list[str], batch_size: int, by_length: bool) -> np.ndarray:
    """Probabilities of ``texts`` in input order, scored in input or length order."""
    from scoring.lengths import length_order

    order = length_order(texts) if by_length else list(range(len(texts)))
    probs = None
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        part = backend.classify([texts[i] for i in batch], model).probabilities
        if probs is None:
            probs = np.empty((len(texts), part.shape[1]), np.float32)
        probs[batch] = part
    return probs


def _read_corpus(corpus: Path) -> list[str]:
    from jobs.readers import ReadOptions, Record, read_input, resolve_input

    roots = [corpus]
    return [item.text for item in read_input(resolve_input(str(corpus), roots), roots, ReadOptions())
            if isinstance(item, Record)]


def _read_and_score(backend, model: str, corpus: Path, batch_size: int, by_length: bool) -> tuple[float, int]:
    """Seconds to read the corpus with the job readers and score it in this process; documents."""
    started = time.perf_counter()
    texts = _read_corpus(corpus)
    _score(backend, model, texts, batch_size, by_length)
    return time.perf_counter() - started, len(texts)


def _rate(backend, model: str, texts: list[str], batch_size: int) -> float:
    started = time.perf_counter()
    _score(backend, model, texts, batch_size, by_length=False)
    return len(texts) / (time.perf_counter() - started)


def _call_cost(backend, model: str, words: list[str]) -> dict:
    """Fit seconds = a + s·L + b·(texts × L) + c·texts over calls of n texts of L words: ``a / b``
    is what one call costs beyond its texts, in token steps, and ``s / b`` what one time step
    costs beyond its texts."""
    rows, seconds = [], []
    for n in (1, 8, 32, 64):
        for length in (10, 50, 150, 300):
            texts = [" ".join(words[i * 7 % 1000:i * 7 % 1000 + length]) for i in range(n)]
            backend.classify(texts, model)
            best = min(_timed(lambda: backend.classify(texts, model)) for _ in range(3))
            rows.append([1.0, length, n * length, n])
            seconds.append(best)
    (a, step, b, c), *_ = np.linalg.lstsq(np.array(rows), np.array(seconds), rcond=None)
    return {"call_s": float(a), "step_s": float(step), "token_step_s": float(b), "text_s": float(c),
            "call_cost_token_steps": float(a / b) if b > 0 else float("inf"),
            "step_cost_token_steps": float(step / b) if b > 0 else float("inf")}


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


PROCESSES = 2  # gRPC processes of the "after" gateway: one per core here
BEFORE_ROW = "before: fixed graph, one batch"
AFTER_ROW = f"after: new graph, length classes and split, {PROCESSES} gRPC processes"
ONE_PROCESS_AFTER_ROW = "after: new graph, length classes and split"  # "after" until it ran in several processes
ONE_PROCESS_ROW = "new graph, length classes and split, one gRPC process"
FIXED_PROCESSES_ROW = f"fixed graph, length classes and split, {PROCESSES} gRPC processes"
# The gateway as it was: one batch of any lengths, TensorFlow's own thread pool in every call.
BEFORE_BATCHING = {"NEWSCLF_BATCH_LENGTH_CLASSES": "", "NEWSCLF_BATCH_SPLIT_CALL_COST": "0"}
TF_DEFAULT_THREADS = {"NEWSCLF_TF_INTRA_OP_THREADS": "0"}
NO_XLA = {"NEWSCLF_XLA_MAX_BATCH": "0"}
NO_XLA_ROW = "new graph, length classes and split, without XLA"
CEILING_ROW = f"reference: n-gram model (no recurrent work), length classes and split, {PROCESSES} gRPC processes"
ONE_PROCESS_CEILING_ROW = "reference: n-gram model (no recurrent work), length classes and split"
SEVERAL_PROCESSES = {"NEWSCLF_GRPC_PROCESSES": str(PROCESSES)}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by a gateway and the gRPC processes it started."""
    from tests.support.processes import descendants

    return sum(_cpu_seconds(p) for p in descendants(pid))


def _settle(pids: list[int], idle_share: float = 0.05, timeout_s: float = 180.0) -> None:
    """Wait until the processes use less than ``idle_share`` of a core (their compiles are done)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        used = sum(_tree_cpu_seconds(pid) for pid in pids)
        time.sleep(1.0)
        if sum(_tree_cpu_seconds(pid) for pid in pids) - used < idle_share:
            return


def _gateway(root: Path, new: str, old: str, texts: list[str], requests: int,
             rounds: int) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Requests/s at concurrency 32 through the gateway (gRPC, from the lean load generator of
    ``bench.gateway_bench``, 32 connections), one document per request, documents per model call,
    and CPU milliseconds per request of the gateway's processes and of the clients: one gateway
    as before (no length classes, no split, TensorFlow's default threads, no XLA), one with today's
    defaults, one with today's batching and TensorFlow's default threads, one without XLA, and one
    with ``PROCESSES`` gRPC processes (the "after" row).  Each
    mode first sends every text twice, each time followed by a wait for the gateways to go idle,
    so XLA has compiled the batch shapes the run needs.  With an
    ``ngram`` model in ``root``, a last row serves it through the "after" gateway: a model whose call
    costs next to nothing, so its row is what the gateway and the clients cost on their own."""
    from bench.gateway_bench import GatewayProcess, LeanGrpcClient, load
    from tests.support.processes import listening_sockets, wait_for
    from training.layout import NGRAM, ModelRoot

    processes, clients = {}, {}
    try:
        for batching, env in (("before", {**BEFORE_BATCHING, **TF_DEFAULT_THREADS, **NO_XLA}), ("today", {}),
                              ("today, TensorFlow's threads", TF_DEFAULT_THREADS), ("today, without XLA", NO_XLA),
                              ("today, processes", SEVERAL_PROCESSES)):
            saved = {key: os.environ.pop(key, None) for key in env}
            os.environ.update(env)
            try:
                processes[batching] = GatewayProcess(root)
            finally:
                for key, value in saved.items():
                    os.environ.pop(key, None)
                    if value is not None:
                        os.environ[key] = value
        for batching, process in processes.items():
            process.wait_ready()
            if batching == "today, processes":  # connections made before a process listens never reach it
                wait_for(lambda p=process.grpc_port: listening_sockets(p) == PROCESSES, 300, "every gRPC process")
            clients[batching] = LeanGrpcClient(f"127.0.0.1:{process.grpc_port}", connections=32)
        modes = {BEFORE_ROW: ("before", old), "new graph, one batch": ("before", new),
                 "fixed graph, length classes and split": ("today", old),
                 FIXED_PROCESSES_ROW: ("today, processes", old),
                 "new graph, length classes and split, TensorFlow's default threads":
                     ("today, TensorFlow's threads", new),
                 NO_XLA_ROW: ("today, without XLA", new),
                 ONE_PROCESS_ROW: ("today", new),
                 AFTER_ROW: ("today, processes", new)}
        if ModelRoot(root).latest(NGRAM) is not None:
            modes[CEILING_ROW] = ("today, processes", NGRAM)
        for _ in range(2):  # XLA compiles each batch shape the first time it is seen, on the side
            for mode, (batching, model) in modes.items():
                load(lambda t, c=clients[batching], m=model: c.classify(t, m), texts, len(texts), 32, mode)
            _settle([process.process.pid for process in processes.values()])
        tries: dict[str, list[float]] = {mode: [] for mode in modes}
        cpu: dict[str, list[float]] = {mode: [] for mode in modes}
        client_cpu: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(rounds):
            for mode, (batching, model) in modes.items():
                pid = processes[batching].process.pid
                used, client_used = _tree_cpu_seconds(pid), time.process_time()
                run = load(lambda t, c=clients[batching], m=model: c.classify(t, m), texts, requests, 32, mode)
                client_cpu[mode].append((time.process_time() - client_used) * 1000 / requests)
                cpu[mode].append((_tree_cpu_seconds(pid) - used) * 1000 / requests)
                tries[mode].append(run.throughput)
                print(f"   gateway {mode}: {run.throughput:.0f} req/s, CPU ms/request {cpu[mode][-1]:.2f} "
                      f"in the gateway, {client_cpu[mode][-1]:.2f} in the clients", flush=True)
        per_call = {batching: _documents_per_call(process) for batching, process in processes.items()}
        return {"gateway_rps": {mode: statistics.median(values) for mode, values in tries.items()},
                "gateway_documents_per_call": {mode: per_call[batching].get(model, float("nan"))
                                               for mode, (batching, model) in modes.items()},
                "gateway_cpu_ms_per_request": {mode: statistics.median(v) for mode, v in cpu.items()},
                "gateway_client_cpu_ms_per_request": {mode: statistics.median(v) for mode, v in client_cpu.items()},
                "gateway_client": "lean", "gateway_connections": 32}
    finally:
        for client in clients.values():
            client.close()
        for process in processes.values():
            process.stop()


def _after(rps: dict[str, float]) -> float:
    """The "after" row of a run, also of runs made before "after" had several gRPC processes."""
    return rps.get(AFTER_ROW, rps.get(ONE_PROCESS_AFTER_ROW))


def _documents_per_call(process) -> dict[str, float]:
    """Mean documents per backend call of each model in a gateway process, from its /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, dict[str, float]] = {}
    scrape = httpx.get(f"http://127.0.0.1:{process.http_port}/metrics", timeout=10).text
    for family in text_string_to_metric_families(scrape):
        if family.name == "newsclf_batch_documents":
            for sample in family.samples:
                totals.setdefault(sample.labels["model"], {})[sample.name.rsplit("_", 1)[-1]] = sample.value
    return {model: t["sum"] / t["count"] for model, t in totals.items() if t.get("count")}


def cmd_score(args) -> int:
    """Scoring with the two graphs of one trained model: identity, in-process, Celery, gateway."""
    import tempfile

    from scoring.backends import create_backend
    from scoring.settings import BackendSettings
    from tests.support.processes import wait_for
    from training.dataset import load

    root = args.work / "models"
    new, old = args.variant, args.variant + FIXED_SUFFIX
    backend = create_backend(BackendSettings(model_root=root))
    for model in (new, old):
        wait_for(lambda m=model: backend.ready(m), 300, f"model {model}", step=0.05)
        backend.classify(["warm up"] * args.batch_size, model)
        backend.classify(["warm up"] * BEFORE_BATCH, model)
    corpus = args.corpus.resolve()
    figures: dict = {"variant": args.variant, "batch_size": args.batch_size, "chunk_size": args.chunk_size,
                     "rounds": args.rounds,
                     "load_before": os.getloadavg()[0]}

    test = load(args.corpus).test.texts()
    identity = {}
    for by_length in (True, False):
        p_new = _score(backend, new, test, args.batch_size, by_length)
        p_old = _score(backend, old, test, args.batch_size, False)
        identity["length order" if by_length else "input order"] = {
            "max_abs_diff": float(np.abs(p_new - p_old).max()),
            "argmax_differs": int(np.sum(p_new.argmax(axis=1) != p_old.argmax(axis=1)))}
    figures["identity"] = {"documents": len(test), **identity}
    print(f"identity over {len(test)} test documents: {identity}", flush=True)

    texts = _read_corpus(corpus)
    words = [len(t.split()) for t in texts]
    short = [t for t, w in zip(texts, words) if 0 < w <= SHORT_TOKENS]
    long = [t for t, w in zip(texts, words) if w >= LONG_TOKENS]
    figures["call_cost"] = _call_cost(backend, new, " ".join(texts[:500]).split())
    print(f"call cost: {figures['call_cost']}", flush=True)

    batch = args.batch_size
    in_process = {f"before: fixed graph, input order, calls of {BEFORE_BATCH}": (old, False, BEFORE_BATCH),
                  f"fixed graph, input order, calls of {batch}": (old, False, batch),
                  f"fixed graph, length order, calls of {batch}": (old, True, batch),
                  f"new graph, input order, calls of {batch}": (new, False, batch),
                  f"new graph, length order, calls of {BEFORE_BATCH}": (new, True, BEFORE_BATCH),
                  f"after: new graph, length order, calls of {batch}": (new, True, batch)}
    seconds: dict[str, list[float]] = {mode: [] for mode in in_process}
    batches: dict[str, list[float]] = {}
    workers = None
    jobs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="length-bench-") as tmp:
        if args.celery:
            from bench.worker_bench import Workers
            workers = Workers(Path(tmp), root, corpus, args.batch_size, args.chunk_size)
        try:
            for round_no in range(1, args.rounds + 1):
                for mode, (model, by_length, size) in in_process.items():
                    elapsed, docs = _read_and_score(backend, model, corpus, size, by_length)
                    seconds[mode].append(elapsed)
                for name, group in ((f"only short texts (≤ {SHORT_TOKENS} words)", short),
                                    (f"only long texts (≥ {LONG_TOKENS} words)", long)):
                    for graph, model in (("fixed graph", old), ("new graph", new)):
                        batches.setdefault(f"{name}|{graph}", []).append(
                            _rate(backend, model, group[:args.group_docs], BEFORE_BATCH))
                if workers is not None:
                    elapsed, _ = workers.job_seconds(1, corpus, new)
                    jobs.append(elapsed)
                print(f"round {round_no}: " + ", ".join(f"{m} {v[-1]:.2f}s" for m, v in seconds.items())
                      + (f", Celery job {jobs[-1]:.2f}s" if jobs else ""), flush=True)
        finally:
            if workers is not None:
                workers.close()
    backend.close()
    figures["documents"] = docs
    figures["in_process_s"] = {mode: statistics.median(v) for mode, v in seconds.items()}
    figures["in_process_rounds"] = seconds
    figures["groups"] = {"short": min(len(short), args.group_docs), "long": min(len(long), args.group_docs)}
    figures["group_rates"] = {key: statistics.median(v) for key, v in batches.items()}
    if jobs:
        figures["celery_1_worker_s"] = statistics.median(jobs)
        figures["celery_rounds"] = jobs
    if args.gateway:
        figures.update(_gateway_figures(args, texts))
    figures["load_after"] = os.getloadavg()[0]
    _save(args.figures, f"score-{args.variant}", figures)
    return 0


def _gateway_figures(args, texts: list[str]) -> dict:
    from service.settings import GatewaySettings

    step = max(1, len(texts) // args.gateway_texts)
    sample = [t for t in texts[::step] if t.strip()][:args.gateway_texts]
    settings = GatewaySettings()
    measured = _gateway(args.work / "models", args.variant, args.variant + FIXED_SUFFIX, sample,
                        args.requests, args.rounds)
    return {"gateway_split_cost": settings.batch_split_call_cost, "gateway_threads": settings.tf_intra_op_threads,
            "gateway_xla_max_batch": settings.xla_max_batch,
            "gateway_split_step_cost": settings.batch_split_step_cost,
            "gateway_length_classes": settings.batch_length_classes, **measured,
            "gateway_texts": len(sample), "gateway_requests": args.requests,
            "gateway_measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "gateway_load": os.getloadavg()[0]}


GATEWAY_KEYS = ("gateway_rps", "gateway_documents_per_call", "gateway_cpu_ms_per_request",
                "gateway_client_cpu_ms_per_request", "gateway_client", "gateway_requests", "gateway_load",
                "gateway_measured_at", "gateway_threads", "gateway_xla_max_batch", "gateway_connections")


def cmd_gateway(args) -> int:
    """The gateway rows alone, again (e.g. after a change of the split costs), into ``score-<variant>``."""
    path = args.figures / f"score-{args.variant}.json"
    figures = json.loads(path.read_text(encoding="utf-8"))
    if "gateway_rps" in figures:  # kept, so a run that disagrees with this one stays on record
        figures.setdefault("gateway_earlier_runs", []).append(
            {key: figures[key] for key in GATEWAY_KEYS if key in figures})
    figures.update(_gateway_figures(args, _read_corpus(args.corpus.resolve())))
    _save(args.figures, f"score-{args.variant}", figures)
    return 0


# -- report -------------------------------------------------------------------------------------

def _training_section(runs: list[dict]) -> list[str]:
    if not runs:
        return ["No training runs recorded yet."]
    lines = ["| variant | seed | epochs | s / epoch, fixed | s / epoch, bucketed | × faster | "
             "val accuracy, fixed | val accuracy, bucketed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    verdicts = []
    for variant in VARIANTS:
        mine = sorted((r for r in runs if r["variant"] == variant), key=lambda r: r["seed"])
        for r in mine:
            f, b = r["fixed"], r["bucketed"]
            lines.append(f"| {variant} | {r['seed']} | {r['epochs']} | {f['steady_epoch_seconds']:.1f} | "
                         f"{b['steady_epoch_seconds']:.1f} | "
                         f"{f['steady_epoch_seconds'] / b['steady_epoch_seconds']:.2f} | "
                         f"{f['val_accuracy']:.4f} | {b['val_accuracy']:.4f} |")
        if not mine:
            continue
        speed = statistics.median(r["fixed"]["steady_epoch_seconds"] / r["bucketed"]["steady_epoch_seconds"]
                                  for r in mine)
        fixed_acc = [r["fixed"]["val_accuracy"] for r in mine]
        bucket_acc = [r["bucketed"]["val_accuracy"] for r in mine]
        diffs = [b - f for f, b in zip(fixed_acc, bucket_acc)]
        spread = f"σ of all runs {statistics.stdev(fixed_acc + bucket_acc):.4f}" if len(mine) > 1 else "one seed only"
        verdicts.append(
            f"- {variant}: median {speed:.2f}× faster per epoch (target ≥ {TARGET_TRAIN}×) — "
            f"{'met' if speed >= TARGET_TRAIN else 'NOT met'}; validation accuracy "
            f"{statistics.mean(fixed_acc):.4f} fixed vs {statistics.mean(bucket_acc):.4f} bucketed over "
            f"{len(mine)} seed(s), per-seed differences {', '.join(f'{d:+.4f}' for d in diffs)} "
            f"({spread}).")
    return lines + [""] + verdicts


def _scoring_section(score: dict) -> list[str]:
    variant, docs = score["variant"], score["documents"]
    seconds = score["in_process_s"]
    before = docs / next(s for mode, s in seconds.items() if mode.startswith("before:"))
    after = docs / next(s for mode, s in seconds.items() if mode.startswith("after:"))
    lines = [f"#### {variant}", "",
             f"In-process: the whole corpus read with the job readers and scored through the embedded "
             f"backend, in calls of the size each row names ({docs:,} documents; median of {score['rounds']} "
             f"interleaved rounds; load average {score['load_before']:.1f} before, {score['load_after']:.1f} after).",
             "", "| mode | seconds | docs/s | × before |", "|---|---:|---:|---:|"]
    lines += [f"| {mode} | {s:.2f} | {docs / s:,.0f} | {docs / s / before:.2f} |" for mode, s in seconds.items()]
    lines += ["", "Seconds of every round (the spread is the shared machine's): " + "; ".join(
        f"{mode} {', '.join(f'{x:.2f}' for x in values)}" for mode, values in score["in_process_rounds"].items()) + "."]
    rates = score["group_rates"]
    lines += ["", f"| calls of {BEFORE_BATCH} | documents | docs/s, fixed graph | docs/s, new graph | × |",
              "|---|---:|---:|---:|---:|"]
    for name, key in ((f"only short texts (≤ {SHORT_TOKENS} words)", "short"),
                      (f"only long texts (≥ {LONG_TOKENS} words)", "long")):
        old, new = rates[f"{name}|fixed graph"], rates[f"{name}|new graph"]
        lines.append(f"| {name} | {score['groups'][key]:,} | {old:,.0f} | {new:,.0f} | {new / old:.2f} |")
    identity = score["identity"]
    worst = max(v["max_abs_diff"] for k, v in identity.items() if k != "documents")
    flips = sum(v["argmax_differs"] for k, v in identity.items() if k != "documents")
    verdicts = [
        f"- in-process, whole corpus: {after / before:.2f}× the fixed-length export's docs/s "
        f"(target ≥ {TARGET_IN_PROCESS}×) — {'met' if after / before >= TARGET_IN_PROCESS else 'NOT met'}",
        f"- identity over the {identity['documents']:,} test documents (new graph in length order and in "
        f"input order vs the fixed graph): max abs difference {worst:.2e} (target ≤ {TARGET_ABS_DIFF:.0e}), "
        f"{flips} argmax differences — {'met' if worst <= TARGET_ABS_DIFF and flips == 0 else 'NOT met'}",
    ]
    if "celery_1_worker_s" in score:
        celery = docs / score["celery_1_worker_s"]
        verdicts.append(f"- Celery job on the whole corpus, 1 worker process, new graph: {celery:,.0f} docs/s = "
                        f"{celery / after:.2f}× the new in-process figure (target ≥ 0.8×) — "
                        f"{'met' if celery / after >= 0.8 else 'NOT met'} (rounds: "
                        f"{', '.join(f'{x:.2f}s' for x in score['celery_rounds'])})")
    cost = score["call_cost"]
    lines += ["", f"What a call of the new graph costs (least-squares fit over calls of 1–64 texts of 10–300 "
              f"words): {cost['call_s'] * 1000:.2f} ms per call, {cost['step_s'] * 1e6:.1f} µs per time step "
              f"and {cost['token_step_s'] * 1e6:.2f} µs per token step (texts × longest text); a call is worth "
              f"{cost['call_cost_token_steps']:,.0f} token steps and a time step "
              f"{cost.get('step_cost_token_steps', 0):,.0f}."]
    if "gateway_rps" in score:
        rps = score["gateway_rps"]
        base = rps[BEFORE_ROW]
        classes = ",".join(map(str, score["gateway_length_classes"]))
        lines += ["", f"Gateway (`python -m service serve`, gRPC, one document per request, concurrency 32, "
                  f"{score['gateway_requests']} requests per row and round, {score['gateway_texts']} corpus texts "
                  f"cycled; measured {score.get('gateway_measured_at', 'with the rows above')}). *One batch*: "
                  f"the batcher as before (`BATCH_LENGTH_CLASSES=` empty, "
                  f"`BATCH_SPLIT_CALL_COST=0`); *length classes and split*: today's defaults "
                  f"(`BATCH_LENGTH_CLASSES={classes}`, `BATCH_SPLIT_CALL_COST={score['gateway_split_cost']}`, "
                  f"`BATCH_SPLIT_STEP_COST={score['gateway_split_step_cost']}`, and TensorFlow ops on "
                  f"{score.get('gateway_threads', 'the cores ÷ BATCH_CONCURRENCY')} thread(s) per model call, "
                  "where the rows that say so and *before* keep TensorFlow's default of every core; calls of at "
                  f"most {score.get('gateway_xla_max_batch', 32)} texts run the new graph's numeric half compiled by "
                  "XLA, except *before* and the row without XLA); each gateway serves gRPC from one process, except "
                  f"the rows that say {PROCESSES} (`NEWSCLF_GRPC_PROCESSES={PROCESSES}`: that many processes share "
                  "the port, the kernel handing each connection to one of them); every mode sent each text twice "
                  "before the "
                  "rounds, each pass followed by a wait for the gateways to go idle, so XLA had compiled its "
                  "shapes; load average "
                  f"{score['gateway_load']:.1f} after:", "",
                  "| mode | req/s | × before | documents per model call | gateway CPU ms / request | "
                  "client CPU ms / request |", "|---|---:|---:|---:|---:|---:|"]
        per_call = score.get("gateway_documents_per_call", {})
        cpu = score.get("gateway_cpu_ms_per_request", {})
        client_cpu = score.get("gateway_client_cpu_ms_per_request", {})
        lines += [f"| {mode} | {value:,.0f} | {value / base:.2f} | {per_call.get(mode, float('nan')):.1f} | "
                  f"{cpu.get(mode, float('nan')):.2f} | {client_cpu.get(mode, float('nan')):.2f} |"
                  for mode, value in rps.items()]
        if score.get("gateway_client") == "lean":
            connections = score.get("gateway_connections", 1)
            lines += ["", "The clients are `bench.gateway_bench.LeanGrpcClient`: 32 threads in the benchmark's "
                      f"process, over {connections} connection{'s' if connections > 1 else ''}"
                      f"{' (one per thread, as 32 client programs)' if connections == 32 else ''}, sending each "
                      "request's bytes as serialised once, and parsing the answers with "
                      "protobuf's C++ parser. The product's client (`service.client`) converts through protobuf's "
                      "JSON mapping both ways; on these 2 cores that work is taken from the gateway, so the earlier "
                      "runs below, made with it, flatten the difference between the gateways. The last column is "
                      "the benchmark process's CPU time per request."]
        step = cost.get("step_cost_token_steps", 0.0)
        lines += ["", f"A time step costs as much as {step:.0f} texts do, and at concurrency 32 a model call holds "
                  "the few requests in the fourth column (the mean over the run, from the gateway's `/metrics`), "
                  "nearly always one long text among them: cutting such a call in two costs more time steps than "
                  "it saves, so the length classes keep short and long requests in different calls from the start. "
                  "The fifth column is the gateway's CPU time per request (median round; all its processes): it "
                  "counts what the gateway spends, where requests/s also carries the 32 client threads that share "
                  "the 2 cores."]
        if ONE_PROCESS_ROW in rps and AFTER_ROW in rps:
            fixed_one, fixed_several = rps["fixed graph, length classes and split"], rps[FIXED_PROCESSES_ROW]
            lines += ["", "One gateway process answers with about one core's worth of Python at most, however many "
                      f"threads it has (the interpreter lock). With the new graph, {PROCESSES} processes took the "
                      f"gateway from {rps[ONE_PROCESS_ROW]:,.0f} to {rps[AFTER_ROW]:,.0f} req/s "
                      f"({rps[AFTER_ROW] / rps[ONE_PROCESS_ROW]:.2f}×); with the fixed graph, whose calls keep the "
                      f"cores busier, from {fixed_one:,.0f} to {fixed_several:,.0f} "
                      f"({fixed_several / fixed_one:.2f}×): each process batches only its own requests."]
        after_row = AFTER_ROW if AFTER_ROW in rps else ONE_PROCESS_AFTER_ROW
        ceiling_row = CEILING_ROW if CEILING_ROW in rps else ONE_PROCESS_CEILING_ROW
        if ceiling_row in rps and after_row in cpu:
            reference = cpu[ceiling_row]
            lines += ["", f"The reference row serves the n-gram model (a sparse lookup and one matrix product, no "
                      f"recurrent work) through the same gateway as *after*: {rps[ceiling_row]:,.0f} req/s "
                      f"({rps[ceiling_row] / base:.2f}× before) and "
                      f"{reference:.2f} gateway CPU ms per request are what gRPC and the gateway's own work cost "
                      "with next to no model work (the clients' share of the cores comes on top), so no change of the "
                      f"recurrent graph can take the gateway far past that row here.  Net of that row's cost, the "
                      "recurrent work per request went from "
                      f"{cpu[BEFORE_ROW] - reference:.2f} to {cpu[after_row] - reference:.2f} CPU ms "
                      f"({(cpu[BEFORE_ROW] - reference) / max(cpu[after_row] - reference, 1e-9):.2f}× less)."]
        best = rps[after_row] / base
        earlier_runs = score.get("gateway_earlier_runs", [])
        earlier = [_after(run["gateway_rps"]) / run["gateway_rps"][BEFORE_ROW] for run in earlier_runs]
        if earlier:
            lines += ["", "Earlier runs of `gateway` (same export command and seed) gave "
                      + ", ".join(f"{ratio:.2f}× ({run.get('gateway_client', 'product')} client"
                                  f"{'' if AFTER_ROW in run['gateway_rps'] else ', one gRPC process'})"
                                  for ratio, run in zip(earlier, earlier_runs, strict=True))
                      + " (after vs before): the gateway rows are the least repeatable figures here, as the gateway "
                      "and its 32 client threads share 2 cores."]
        processes = (f" with {PROCESSES} gRPC processes (one gRPC process: {rps[ONE_PROCESS_ROW] / base:.2f}×)"
                     if after_row == AFTER_ROW and ONE_PROCESS_ROW in rps else "")
        verdicts.append(f"- gateway at concurrency 32: {best:.2f}× today's requests/s{processes} (target ≥ 1.5×) — "
                        f"{'met' if best >= 1.5 else 'NOT met'}"
                        + (f" in this run; earlier runs {', '.join(f'{r:.2f}×' for r in earlier)}" if earlier else "")
                        + (f"; the n-gram reference row reaches {rps[ceiling_row] / base:.2f}×" if ceiling_row in rps
                           else ""))
    return lines + [""] + verdicts + [""]


def cmd_report(args) -> int:
    """Write the training and the scoring part of the lengths section, each from its figures;
    a part with no figures in ``--figures`` is left as it is."""
    runs = _load_all(args.figures, "train")
    scores = _load_all(args.figures, "score")
    parts = {}
    if runs:
        parts["lengths"] = "\n".join([
            "## Recurrent work in proportion to text length",
            "",
            "Commands: `python -m bench.length_bench train --variant V --seed S` (one per variant and "
            "seed, each under the CPU lock), `python -m bench.length_bench export --variant V` and "
            "`python -m bench.length_bench score --variant V`, then `python -m bench.length_bench report`; "
            "the figures are kept in `docs/figures/lengths/`.",
            "",
            "### Training: fixed-length vs length-bucketed batches",
            "",
            "The `default` preset as trained for use (12 epochs at most, early stopping on validation loss), "
            "twice from each seed with the same split, initial weights and word2vec start: *fixed* pads "
            "every text to max_length 300 (the training loop before), *bucketed* (today's default) "
            "shuffles, sorts texts by length within windows of 16 batches, cuts each batch to its longest "
            "text and shuffles the batches; the bucketed run is the training benchmark's run of the same "
            "variant and seed. Seconds per epoch (training plus validation pass) are the mean over the "
            "epochs after the first, which also traces the step; other jobs shared the machine (each "
            "run's load averages are in its figures), so read the speed-up within a row. "
            "Validation accuracy "
            "is the exported model's (best epoch by validation loss) on the 10 % validation split.",
            "",
            *_training_section(runs),
        ])
    if scores:
        parts["lengths-scoring"] = "\n".join([
            "### Scoring: the fixed-length graph vs the graph cut to each batch's longest text",
            "",
            "Both graphs exported from the same trained weights (`export`: a short run of the `default` "
            "preset; what a call costs depends on the graph, not on the weights): *fixed graph* pads every "
            "text to max_length 300 (the export before), *new graph* cuts each batch to its longest text. "
            "*length order* scores texts shortest first and puts the answers back in input order, as a "
            f"job's chunk now is scored. *Calls of {BEFORE_BATCH}* is a job's batch size before; texts in "
            "length order go in larger calls (`NEWSCLF_BATCH_SIZE`, now 256), which share each call's and "
            "each time step's fixed cost among more texts. The rows in between tell the graph, the order "
            "and the call size apart.",
            "",
            *(line for score in scores for line in _scoring_section(score)),
        ])
    for name, report in parts.items():
        print(report)
        if not args.no_write:
            print(f"\nwrote {write_section(name, report)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=WORK, help="where the exported models (models/) are kept")
    parser.add_argument("--figures", type=Path, default=FIGURES,
                        help="where the measured figures (*.json, kept in git) are kept for `report`")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("train", help="train one variant, fixed-length then bucketed, from one seed")
    p.add_argument("--variant", choices=VARIANTS, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=TRAIN_EPOCHS)
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    p.add_argument("--cache-dir", type=Path, default=REPO / "runs" / "cache",
                   help="word2vec start kept between runs (same seed, same start)")
    p.add_argument("--state", type=Path, default=REPO / "runs" / "bench",
                   help="the training benchmark's state, which keeps the bucketed run")
    p.add_argument("--export", action="store_true",
                   help="export the bucketed model twice (batch-longest and max_length padding) for `score`")
    p.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                   help="override a default-preset setting (e.g. for a smoke run)")
    p.set_defaults(run=cmd_train)
    p = commands.add_parser("export", help="train one variant briefly and export both graphs for `score`")
    p.add_argument("--variant", choices=VARIANTS, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    p.add_argument("--cache-dir", type=Path, default=REPO / "runs" / "cache")
    p.set_defaults(run=cmd_export)
    measured = argparse.ArgumentParser(add_help=False)
    measured.add_argument("--variant", choices=VARIANTS, required=True)
    measured.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    measured.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    measured.add_argument("--requests", type=int, default=3000, help="gateway requests per row and round")
    measured.add_argument("--gateway-texts", type=int, default=512, help="corpus texts cycled through the gateway")
    p = commands.add_parser("score", parents=[measured], help="score with both graphs of one exported model")
    p.add_argument("--batch-size", type=int, default=JobSettings().batch_size,
                   help="texts per model call after the change (a job's NEWSCLF_BATCH_SIZE)")
    p.add_argument("--chunk-size", type=int, default=JobSettings().chunk_size)
    p.add_argument("--group-docs", type=int, default=1024, help="documents in the only-short and only-long rows")
    p.add_argument("--no-celery", dest="celery", action="store_false")
    p.add_argument("--no-gateway", dest="gateway", action="store_false")
    p.set_defaults(run=cmd_score)
    p = commands.add_parser("gateway", parents=[measured], help="measure the gateway rows of `score` again")
    p.set_defaults(run=cmd_gateway)
    p = commands.add_parser("report", help="write the lengths section of docs/benchmarks.md")
    p.add_argument("--no-write", action="store_true")
    p.set_defaults(run=cmd_report)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
