"""Seed-averaged training benchmark, resumable: every served model and both TF-IDF baselines on
the reuters46 test split, each row the mean ± standard deviation over seeds.

A full run (six trained models and their combinations per seed, three seeds) does not fit in
one sitting on 2 cores, so every finished (model, seed) is kept with its figures in
``docs/figures/training/`` (in git, so a new machine resumes the table) and reused; each
invocation trains at most ``--max-runs`` missing models, exports the hybrids and ensembles whose
members are all there, and rewrites the table.  Models are exported per seed into
``<state>/seed-<k>/`` (hybrid members must share a seed, hence a validation split; a member
whose figures are kept but whose model is gone is trained again from its seed); figures come
from those exported SavedModels, loaded from disk and called through ``serving_default`` on raw
text.  Choices are read from the validation columns, never from test.

    python -m bench.training_bench --seeds 1,2,3 --max-runs 1      # repeat until complete
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import REPO, mean_std
from bench.report import write_section
from bench.tfidf_baseline import BASELINES, run_baseline
from training.dataset import Reuters46, load
from training.evaluate import ServingModel, evaluate_export
from training.layout import ENSEMBLE, NGRAM, SENTENCE, VARIANTS, ModelRoot
from training.presets import preset
from training.report import fmt
from training.train import ensemble_members, hybrid_name

QUICK = "quick"


@dataclass(frozen=True)
class Spec:
    """A model the benchmark trains: which variant, with which preset."""

    variant: str
    preset: str


TRAINED = {NGRAM: Spec(NGRAM, "default"), SENTENCE: Spec(SENTENCE, "default"),
           **{v: Spec(v, "default") for v in ("bilstm", "gru", "lstm", "rnn")},
           "rnn-seed": Spec("rnn", "seed")}
TARGETS = {"rnn": 0.875, "lstm": 0.89, "gru": 0.90, "bilstm": 0.905, ENSEMBLE: 0.925, QUICK: 0.85,
           **{hybrid_name(v): 0.925 for v in VARIANTS}}
QUICK_MINUTES = 3.0
RESULTS = REPO / "docs" / "figures" / "training"
SERVED_PEERS = tuple(hybrid_name(v) for v in VARIANTS)  # what the ensemble's serving cost is set against


class State:
    """``<results>/<model>/seed-<k>.json`` per finished (model, seed); model roots per seed under ``path``."""

    def __init__(self, path: Path, results: Path = RESULTS):
        self.path = path
        self.results = results

    def root(self, seed: int) -> ModelRoot:
        return ModelRoot(self.path / f"seed-{seed}")

    def quick_root(self, seed: int) -> ModelRoot:
        return ModelRoot(self.path / f"quick-seed-{seed}")

    def _file(self, model: str, seed: int) -> Path:
        return self.results / model / f"seed-{seed}.json"

    def get(self, model: str, seed: int) -> dict | None:
        path = self._file(model, seed)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def put(self, model: str, seed: int, result: dict) -> None:
        path = self._file(model, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2), encoding="utf-8")

    def done(self, model: str, seed: int) -> bool:
        return self._file(model, seed).is_file()


def figures(root: ModelRoot, model: str, data: Reuters46, **extra) -> dict:
    """Test figures measured from the exported SavedModel, validation figures from its metadata."""
    version = root.latest(model)
    meta = root.read_metadata(model, version)
    field = meta.settings.get("text", "title_body")
    test = evaluate_export(root, model, version, data.test.texts(field), data.test.y, data.labels).metrics
    return {"model": model, "version": version, "val_accuracy": meta.metrics["val_accuracy"],
            "val_ece": meta.metrics["val_ece"], "test_accuracy": test["accuracy"],
            "test_macro_f1": test["macro_f1"], "test_ece": test["ece"],
            "train_seconds": meta.metrics.get("train_seconds"), "epochs": meta.metrics.get("epochs_run"),
            "weights": meta.settings.get("weights"), "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            **extra}


def docs_per_second(paths: list[Path], texts: list[str], rounds: int = 3, batch_size: int = 64) -> list[float]:
    """In-process docs/s of each SavedModel, rounds interleaved, median round."""
    models = [ServingModel(p) for p in paths]
    for m in models:
        m.predict(texts[:batch_size])  # warm up
    seconds: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for i, m in enumerate(models):
            started = time.perf_counter()
            m.predict(texts, batch_size=batch_size)
            seconds[i].append(time.perf_counter() - started)
    return [len(texts) / float(np.median(s)) for s in seconds]


def train_one(name: str, seed: int, data: Reuters46, state: State, overrides: dict, cache_dir: Path) -> dict:
    from training.ngrams import train_ngram
    from training.sentence import train_sentence
    from training.train import train_variant
    spec = TRAINED[name]
    settings = preset(spec.preset, spec.variant, **overrides)
    root = state.root(seed)
    version = root.latest(name)
    if version is not None:  # exported by an earlier run that stopped before keeping its figures
        meta = root.read_metadata(name, version)
        if meta.preset == spec.preset and meta.settings.get("seed") == seed:
            print(f"== {name} seed {seed}: reusing {name}/{version}", flush=True)
            return figures(root, name, data, wall_seconds=meta.metrics.get("train_seconds", 0.0)
                           + meta.metrics.get("pretrain_seconds", 0.0))
    print(f"== {name} seed {seed}: {spec.variant}, preset {spec.preset}", flush=True)
    started = time.perf_counter()
    if spec.variant == NGRAM:
        train_ngram(data, settings, root, name=name, preset=spec.preset, seed=seed)
    elif spec.variant == SENTENCE:
        train_sentence(data, settings, root, name=name, preset=spec.preset, seed=seed, cache_dir=cache_dir)
    else:
        train_variant(data, spec.variant, settings, root, name=name, preset=spec.preset, seed=seed,
                      verbose=2, cache_dir=cache_dir)
    return figures(root, name, data, wall_seconds=time.perf_counter() - started)


def train_quick(seed: int, data: Reuters46, state: State, overrides: dict, cache_dir: Path) -> dict:
    """What the quickstart runs (``train --variant all --preset quick``), timed end to end;
    the row's figures are those of the model the quickstart classifies with (``ngram``)."""
    from training.ngrams import train_ngram
    from training.train import export_combinations, train_variant
    root = state.quick_root(seed)
    print(f"== quick preset seed {seed}", flush=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    for variant in VARIANTS:
        train_variant(data, variant, preset(QUICK, variant, **overrides), root, preset=QUICK, seed=seed,
                      verbose=2, cache_dir=cache_dir)
    train_ngram(data, preset(QUICK, **overrides), root, preset=QUICK, seed=seed)
    export_combinations(data, root, list(VARIANTS), preset(QUICK, **overrides), seed=seed)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return figures(root, NGRAM, data, wall_seconds=wall, cpu_seconds=cpu,
                   ensemble=figures(root, ENSEMBLE, data), gru=figures(root, "gru", data))


def _member(name: str, seed: int, data: Reuters46, state: State, overrides: dict, cache_dir: Path) -> None:
    """Make sure a finished member's model is in the seed's root: train it again from its seed when
    only its figures were kept (a new machine), keeping the figures of the model now there."""
    if state.root(seed).latest(name) is None:
        state.put(name, seed, train_one(name, seed, data, state, overrides, cache_dir))


def combine(seed: int, data: Reuters46, state: State, overrides: dict, cache_dir: Path) -> None:
    """Export the hybrids and the ensemble of ``seed`` whose members are all trained."""
    from training.train import export_combinations
    root = state.root(seed)
    settings = preset("default", **overrides)
    if not state.done(NGRAM, seed):
        return
    for variant in VARIANTS:
        name = hybrid_name(variant)
        if state.done(variant, seed) and not state.done(name, seed):
            for member in (variant, NGRAM):
                _member(member, seed, data, state, overrides, cache_dir)
            export_combinations(data, root, [variant], settings, seed=seed)
            pure, mixed = docs_per_second([root.version_dir(variant, root.latest(variant)),
                                           root.version_dir(name, root.latest(name))], data.test.texts()[:512])
            state.put(name, seed, figures(root, name, data, docs_per_s=mixed, pure_docs_per_s=pure,
                                          wall_seconds=_members_wall(state, [variant, NGRAM], seed)))
    members = ensemble_members(list(VARIANTS), settings)
    if all(state.done(m, seed) for m in members) and not state.done(ENSEMBLE, seed):
        for member in members:
            _member(member, seed, data, state, overrides, cache_dir)
        from training.export import export_ensemble
        _, val = data.validation_split(settings.val_fraction, seed)
        export_ensemble(root, members, labels=data.labels, validation=(val.texts(), val.y), weighted=True,
                        target_precision=settings.target_precision)
        state.put(ENSEMBLE, seed, figures(root, ENSEMBLE, data, wall_seconds=_members_wall(state, members, seed)))
    ensemble = state.get(ENSEMBLE, seed)
    if ensemble and "hybrid_docs_per_s" not in ensemble and all(root.latest(m) for m in SERVED_PEERS):
        # what serving the ensemble costs beside the hybrids it competes with, measured in one run
        names = [ENSEMBLE, *SERVED_PEERS]
        rates = docs_per_second([root.version_dir(m, root.latest(m)) for m in names], data.test.texts()[:512])
        state.put(ENSEMBLE, seed, {**ensemble, "docs_per_s": rates[0],
                                   "hybrid_docs_per_s": dict(zip(SERVED_PEERS, rates[1:], strict=True))})


def _members_wall(state: State, members: list[str], seed: int) -> float:
    """A combination's training time: its members' (combining itself takes seconds)."""
    return float(sum(state.get(m, seed).get("wall_seconds") or 0.0 for m in members))


ROW_ORDER = ["rnn-seed", *VARIANTS, NGRAM, SENTENCE, *[hybrid_name(v) for v in VARIANTS], ENSEMBLE, QUICK]
DESCRIPTION = {"rnn-seed": "SimpleRNN, `seed` preset (the lesson's reference)",
               NGRAM: "TF-IDF 1-2-gram NB-SVM in the graph, softmax calibrated on validation",
               SENTENCE: "frozen all-MiniLM-L6-v2 on the first 64 word pieces, logistic regression",
               ENSEMBLE: "weighted geometric mean of the four variants, ngram and sentence",
               QUICK: "`quick` preset, ngram (what the quickstart classifies with); train min: the whole quick run",
               **{v: f"pure {v}, `default` preset" for v in VARIANTS},
               **{hybrid_name(v): f"weighted geometric mean of {v} and ngram" for v in VARIANTS}}


def table(state: State, seeds: list[int], baselines: list[dict]) -> tuple[str, list[str]]:
    lines = ["| model | what | seeds | val accuracy | test accuracy | test macro-F1 | test ECE | "
             "train min | weights (seed 1) | target (test accuracy) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for b in baselines:
        lines.append(f"| {b['name']} | word 1-2-gram TF-IDF, whole training split, scikit-learn | — | — | "
                     f"{fmt(b['accuracy'], 4)} | {fmt(b['macro_f1'], 4)} | {fmt(b['ece'])} | "
                     f"{b['fit_seconds'] / 60:.1f} | — | reference |")
    notes, best = [], None
    for model in ROW_ORDER:
        results = [r for s in seeds if (r := state.get(model, s))]
        if not results:
            continue
        col = {k: [r[k] for r in results if r.get(k) is not None]
               for k in ("val_accuracy", "test_accuracy", "test_macro_f1", "test_ece", "wall_seconds")}
        weights = results[0].get("weights")
        shown = ", ".join(f"{k} {w:.2f}" for k, w in weights.items()) if weights else "—"
        target = TARGETS.get(model)
        met = ""
        if target is not None and col["test_accuracy"]:
            met = f"≥ {target} ({'met' if np.mean(col['test_accuracy']) >= target else 'missed'})"
        minutes = mean_std([s / 60 for s in col["wall_seconds"]], 1)
        lines.append(f"| {model} | {DESCRIPTION[model]} | {len(results)} | {mean_std(col['val_accuracy'])} | "
                     f"{mean_std(col['test_accuracy'])} | {mean_std(col['test_macro_f1'])} | "
                     f"{mean_std(col['test_ece'], 3)} | {minutes} | {shown} | {met} |")
        if model not in (QUICK, "rnn-seed") and (best is None or np.mean(col["val_accuracy"]) > best[1]):
            best = (model, float(np.mean(col["val_accuracy"])), len(results))
        peers = [r for r in results if r.get("hybrid_docs_per_s")]
        if peers:
            shown = ", ".join(f"{np.mean([r['hybrid_docs_per_s'][m] for r in peers]):,.0f} for {m} "
                              f"({mean_std([r['docs_per_s'] / r['hybrid_docs_per_s'][m] for r in peers], 2)}×)"
                              for m in SERVED_PEERS)
            notes.append(f"- {model}: in-process {np.mean([r['docs_per_s'] for r in peers]):,.0f} docs/s vs {shown} "
                         f"over {len(peers)} seed(s) (batch 64, 512 test texts, median of 3 interleaved rounds, "
                         "measured in one run per seed)")
        speeds = [(r["docs_per_s"], r["pure_docs_per_s"]) for r in results if r.get("pure_docs_per_s")]
        if speeds:
            ratio = [a / b for a, b in speeds]
            notes.append(f"- {model}: in-process {np.mean([a for a, _ in speeds]):.0f} docs/s vs "
                         f"{np.mean([b for _, b in speeds]):.0f} for its pure variant, "
                         f"{mean_std(ratio, 2)}× (target ≥ 0.8×; batch 64, 512 test texts, median of 3 "
                         "interleaved rounds, measured when the hybrid was exported)")
        quick = [r for r in results if model == QUICK]
        if quick:
            notes.append(f"- quick: `train --variant all --preset quick` (four variants, ngram, hybrids, "
                         f"ensemble, evaluation) took {mean_std([r['wall_seconds'] / 60 for r in quick], 1)} min "
                         f"wall on the shared machine and {mean_std([r['cpu_seconds'] / 60 for r in quick], 1)} "
                         f"CPU-minutes; its ngram (the sample model) {mean_std([r['test_accuracy'] for r in quick])} "
                         f"test accuracy after {mean_std([r['train_seconds'] for r in quick], 0)} s of fitting; "
                         f"its ensemble {mean_std([r['ensemble']['test_accuracy'] for r in quick])} "
                         f"(validation {mean_std([r['ensemble']['val_accuracy'] for r in quick])}), its gru "
                         f"{mean_std([r['gru']['test_accuracy'] for r in quick])} (target: ≥ 0.85 after "
                         f"≤ {QUICK_MINUTES:.0f} min of training)")
    if best:
        notes.append(f"- best on validation (mean accuracy over seeds): **{best[0]}** ({best[1]:.4f}, "
                     f"{best[2]} seed{'s' if best[2] > 1 else ''})")
    return "\n".join(lines), notes


def main(argv: list[str] | None = None) -> int:
    from training.__main__ import default_corpus
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--state", type=Path, default=Path("runs") / "bench",
                        help="the per-seed model roots")
    parser.add_argument("--results", type=Path, default=None,
                        help=f"finished (model, seed) figures (default: {RESULTS.relative_to(REPO)}, kept in git; "
                             "with --set, <state>/results, so a smoke run leaves the table alone)")
    parser.add_argument("--cache-dir", type=Path, default=Path("runs") / "cache")
    parser.add_argument("--seeds", default="1,2,3", help="seeds in the table")
    parser.add_argument("--train-seeds", default=None, help="seeds to train this time (default: --seeds)")
    parser.add_argument("--models", default=",".join([*TRAINED, QUICK]),
                        help="which models to train, in this order of priority")
    parser.add_argument("--max-runs", type=int, default=None,
                        help="train at most this many missing (model, seed) pairs, then write the table")
    parser.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                        help="override a setting in every preset (e.g. epochs=1 for a smoke run)")
    parser.add_argument("--no-doc", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    command = "python -m bench.training_bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    seeds = [int(s) for s in args.seeds.split(",") if s]
    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(TRAINED) - {QUICK}
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {', '.join([*TRAINED, QUICK])}")
    overrides = dict(item.split("=", 1) for item in args.set)

    data = load(args.corpus or default_corpus())
    state = State(args.state, args.results or (args.state / "results" if overrides else RESULTS))
    runs = 0
    train_seeds = [int(s) for s in (args.train_seeds or args.seeds).split(",") if s]
    for model in models:
        for seed in train_seeds:
            if state.done(model, seed) or (args.max_runs is not None and runs >= args.max_runs):
                continue
            if model == QUICK:
                result = train_quick(seed, data, state, overrides, args.cache_dir)
            else:
                result = train_one(model, seed, data, state, overrides, args.cache_dir)
            state.put(model, seed, result)
            runs += 1
            print(f"   {model} seed {seed}: val {result['val_accuracy']:.4f}, test {result['test_accuracy']:.4f}, "
                  f"macro-F1 {result['test_macro_f1']:.4f}", flush=True)
    for seed in seeds:
        combine(seed, data, state, overrides, args.cache_dir)

    baselines = []
    for name in BASELINES:
        if not state.done(name, 0):
            print(f"== {name}", flush=True)
            r = run_baseline(data, name)
            state.put(name, 0, {"name": name, "accuracy": r.accuracy, "macro_f1": r.macro_f1, "ece": r.ece,
                                "fit_seconds": r.fit_seconds, "n_features": r.n_features,
                                "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
        baselines.append(state.get(name, 0))

    rows, notes = table(state, seeds, baselines)
    missing = [f"{m}/{s}" for s in seeds for m in [*TRAINED, QUICK, *[hybrid_name(v) for v in VARIANTS], ENSEMBLE]
               if not state.done(m, s)]
    kept = state.results.resolve().relative_to(REPO) if state.results.resolve().is_relative_to(REPO) else state.results
    markdown = (
        "## Training: reuters46 test split (2,246 documents), mean ± std over seeds\n\n"
        f"Command: `python -m bench.training_bench --seeds {args.seeds}`, here run as one invocation per "
        f"model and seed under the CPU lock (`--models M --train-seeds S`; the last was `{command}`); "
        f"each finished (model, seed) is kept in `{kept}/` and reused.  The std is the sample standard "
        "deviation over the seeds that finished (no ± means one seed).  Test figures come from the "
        "exported SavedModels loaded from disk and called through `serving_default` on raw text; "
        "validation is 10 % of the training split (stratified, drawn from the seed) and is where "
        "temperatures, abstain thresholds, hybrid/ensemble weights and every choice come from.  "
        "Baselines are fitted on the whole training split with scikit-learn (LinearSVC has no "
        "probabilities, so no ECE).  Train minutes are wall-clock on a shared 2-core machine, "
        "word2vec pre-training included unless it came from the cache, and so is any time a run was held "
        "stopped while a timing benchmark had the machine (hence the large spreads).\n\n"
        + (f"**Not complete: missing {', '.join(missing)}.**\n\n" if missing else "")
        + rows + "\n\n" + "\n".join(notes) + "\n")
    print(markdown, flush=True)
    if not args.no_doc:
        write_section("training", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
