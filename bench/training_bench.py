"""Full training benchmark: the four variants (``default``), SimpleRNN (``seed``), the
ensemble and the TF-IDF + LinearSVC baseline, side by side on the reuters46 test split.

Every recurrent figure is measured by loading the EXPORTED SavedModel from disk and calling its
serving signature on the raw test texts.  Writes the ``training`` section of
docs/benchmarks.md and a bar chart beside it.

    python -m bench.training_bench --model-root models --log-dir runs
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from bench.report import DOC, write_section
from bench.tfidf_baseline import run_baseline
from training.dataset import load
from training.evaluate import evaluate_export
from training.export import export_ensemble
from training.layout import ENSEMBLE, VARIANTS, ModelRoot
from training.presets import VARIANT_PRESETS, preset
from training.report import Row, bar_chart, fmt
from training.train import train_variant

TARGETS = {"rnn": 0.75, "lstm": 0.86, "gru": 0.86, "bilstm": 0.90}
SEED_MODEL = "rnn-seed"
CHART = DOC.parent / "training_accuracy.png"


def main(argv: list[str] | None = None) -> int:
    from training.__main__ import default_corpus
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--model-root", type=Path, default=Path("models"))
    parser.add_argument("--log-dir", type=Path, default=Path("runs"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                        help="override a setting in every preset (e.g. epochs=1 for a smoke run)")
    parser.add_argument("--no-doc", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    command = "python -m bench.training_bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    data = load(args.corpus or default_corpus())
    root = ModelRoot(args.model_root)
    root.ensure_writable()
    test_texts = {field: data.test.texts(field) for field in ("title_body", "body")}
    rows, lines = [], []

    overrides = dict(item.split("=", 1) for item in args.set)

    def measure(name, variant, preset_name):
        settings = preset(preset_name, variant, **overrides)
        print(f"== {name}: {variant}, preset {preset_name}", flush=True)
        started = time.perf_counter()
        result = train_variant(data, variant, settings, root, name=name, preset=preset_name,
                               seed=args.seed, log_dir=args.log_dir, verbose=2)
        total = time.perf_counter() - started
        meta = result.metadata
        evaluation = evaluate_export(root, name, meta.version, test_texts[settings.text], data.test.y, data.labels)
        m = evaluation.metrics
        target = TARGETS.get(variant) if preset_name == "default" else None
        met = "—" if target is None else ("met" if m["accuracy"] >= target else "missed")
        lines.append(
            f"| {name} v{meta.version} | {variant} | {preset_name} | {fmt(m['accuracy'], 4)} | "
            f"{fmt(m['macro_f1'], 4)} | {fmt(m['ece'])} | {meta.temperature:.2f} | "
            f"{result.seconds_per_epoch:.1f} | {len(result.epoch_seconds)} | {total / 60:.1f} | "
            f"{fmt(meta.threshold.value)} / {fmt(meta.threshold.coverage)} | "
            f"{'—' if target is None else f'≥ {target:.2f} ({met})'} |")
        rows.append(Row(f"{name} ({preset_name})", m["accuracy"], m["macro_f1"], m["ece"]))

    args.log_dir.mkdir(parents=True, exist_ok=True)
    baseline_rows = args.log_dir / "baseline.json"  # for `python -m training report --extra`

    def publish(done: bool) -> None:
        """Rewrite the doc after every model, so a long run shows its progress."""
        table = "\n".join([
            "| model | variant | preset | test accuracy | macro-F1 | ECE | temperature | s / epoch | "
            "epochs | train min | abstain threshold / coverage | target |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *lines])
        settings = json.dumps(preset("default", **overrides).model_dump(exclude={"train_limit", "test_limit"}))
        markdown = (
            "## Training: reuters46 test split (2,246 documents)\n\n"
            + ("" if done else "**Run in progress: rows appear as models finish.**\n\n")
            + f"Command: `{command}` (seed {args.seed}).  Recurrent figures come from the exported "
            "SavedModels loaded from disk and called through `serving_default` on raw text; the "
            "abstain threshold gives ≥ 0.97 precision on the validation split (10 % of the training "
            "split) and the coverage is measured there.  Time per epoch is wall-clock on this shared "
            "machine (CPU also used by other jobs, so treat it as an upper bound).\n\n"
            f"{table}\n\n"
            f"`default` settings: `{settings}`; per variant: `{json.dumps(VARIANT_PRESETS['default'])}`\n\n"
            "Same table from the exported models any time: `python -m training report --model-root "
            f"{args.model_root} --extra {baseline_rows}`.\n\n"
            f"![accuracy and macro-F1]({CHART.name})\n")
        print(markdown if done else lines[-1], flush=True)
        if not args.no_doc:
            bar_chart(rows, CHART)
            write_section("training", markdown)

    print("== TF-IDF + LinearSVC", flush=True)
    baseline = run_baseline(data)
    lines.append(f"| tfidf-linearsvc | word 1-2-gram TF-IDF + LinearSVC | — | {fmt(baseline.accuracy, 4)} | "
                 f"{fmt(baseline.macro_f1, 4)} | — | — | — | — | {baseline.fit_seconds / 60:.1f} | — | reference |")
    rows.append(Row("tfidf-linearsvc", baseline.accuracy, baseline.macro_f1))
    baseline_rows.write_text(json.dumps([{"name": "tfidf-linearsvc", "accuracy": baseline.accuracy,
                                          "macro_f1": baseline.macro_f1}]), encoding="utf-8")
    publish(done=False)

    measure(SEED_MODEL, "rnn", "seed")
    publish(done=False)
    variants = [v for v in args.variants.split(",") if v]
    for variant in variants:
        measure(variant, variant, "default")
        publish(done=False)

    if set(variants) == set(VARIANTS):
        print("== ensemble", flush=True)
        settings = preset("default", **overrides)
        _, val = data.validation_split(settings.val_fraction, args.seed)
        meta = export_ensemble(root, list(VARIANTS), labels=data.labels,
                               validation=(val.texts(), val.y), test=(test_texts["title_body"], data.test.y))
        m = evaluate_export(root, ENSEMBLE, meta.version, test_texts["title_body"], data.test.y, data.labels).metrics
        lines.append(f"| {ENSEMBLE} v{meta.version} | mean of the four | default | {fmt(m['accuracy'], 4)} | "
                     f"{fmt(m['macro_f1'], 4)} | {fmt(m['ece'])} | {meta.temperature:.2f} | — | — | — | "
                     f"{fmt(meta.threshold.value)} / {fmt(meta.threshold.coverage)} | — (not a single variant) |")
        rows.append(Row(ENSEMBLE, m["accuracy"], m["macro_f1"], m["ece"]))
    publish(done=True)
    if not args.no_doc:
        print(f"wrote {DOC} and {CHART}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
