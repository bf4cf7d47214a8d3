"""Command line: ``python -m training {data,train,evaluate,report,label,prune,download}``.

Errors a user can fix (wrong variant, missing or corrupt corpus, unwritable model root, bad
setting) end with one ``error: ...`` line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Literal, get_args, get_origin

from training.corpus import CorpusError
from training.layout import CUDNN, DEFAULT_SERVING_BASE, GENERIC, NGRAM, SENTENCE, VARIANTS, LayoutError, ModelRoot
from training.presets import PRESETS, TrainSettings

REPO = Path(__file__).resolve().parent.parent
CORPUS_CANDIDATES = (REPO / "data" / "reuters21578.tar.gz", REPO.parent / "shared" / "data" / "reuters21578")
EXIT_USAGE = 2
TRAINABLE = (*VARIANTS, NGRAM, SENTENCE)


class UsageError(Exception):
    """A mistake in the command line or its inputs; reported in one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 -- as for every other user error
        raise UsageError(f"{self.prog}: {message}")


def default_corpus() -> Path:
    """The downloaded archive if present, else the shared copy beside the checkout."""
    return next((p for p in CORPUS_CANDIDATES if p.exists()), CORPUS_CANDIDATES[-1])


def _add_setting_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (override the preset)")
    for name, info in TrainSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind = info.annotation
        help_text = info.description or ""
        if kind is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        elif get_origin(kind) is Literal:
            group.add_argument(flag, dest=name, choices=get_args(kind), default=None, help=help_text)
        elif str in (kind, *get_args(kind)):
            group.add_argument(flag, dest=name, default=None, help=help_text)
        else:
            numeric = float if kind is float or float in get_args(kind) else int
            group.add_argument(flag, dest=name, type=numeric, default=None, help=help_text)


def _overrides(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in TrainSettings.model_fields
            if getattr(args, name, None) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m training", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_corpus(p):
        p.add_argument("--corpus", type=Path, default=None,
                       help="folder of reut2-*.sgm files or reuters21578.tar.gz "
                            f"(default: {CORPUS_CANDIDATES[0]} if present, else {CORPUS_CANDIDATES[1]})")

    def with_root(p):
        p.add_argument("--model-root", type=Path, default=Path("models"), help="model root folder")

    p = commands.add_parser("data", help="read the corpus, check it and print reuters46 counts")
    with_corpus(p)

    p = commands.add_parser("train", help="train and export variants (and the ensemble)")
    with_corpus(p)
    with_root(p)
    p.add_argument("--variant", default="all",
                   help=f"{'|'.join(TRAINABLE)}|all (all: the four variants, the n-gram model, the "
                        "sentence member unless --sentence-pieces 0, their hybrids and the ensemble)")
    p.add_argument("--preset", default="default", choices=list(PRESETS))
    p.add_argument("--seed", type=int, default=1, help="seed for split, weights and batch order")
    p.add_argument("--name", default=None, help="model name in the root (single variant only)")
    p.add_argument("--no-ensemble", action="store_true",
                   help="with --variant all: skip the hybrids and the ensemble")
    p.add_argument("--hold-out-validation", action="store_true",
                   help="train on the fit split alone and score on the validation split instead of test: "
                        "judges on validation a choice that sees validation when it is made (e.g. --refit); "
                        "the exports are for that comparison, not for serving")
    p.add_argument("--cache-dir", type=Path, default=Path("runs") / "cache",
                   help="pre-trained weights kept between runs")
    p.add_argument("--log-dir", type=Path, default=Path("runs"), help="TensorBoard logs")
    p.add_argument("--serving-base-path", default=DEFAULT_SERVING_BASE,
                   help="model root as TF Serving sees it, written into models.config")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    p.add_argument("--kernels", choices=[GENERIC, CUDNN], default=GENERIC,
                   help="recurrent kernels in the export: generic (CPU and GPU, the default) or cudnn "
                        "(GPU only: TF Serving or the gateway then needs a GPU)")
    _add_setting_options(p)

    p = commands.add_parser("evaluate", help="score an exported model on the test split")
    with_corpus(p)
    with_root(p)
    p.add_argument("model", help="model name, e.g. gru or ensemble")
    p.add_argument("--version", type=int, default=None, help="default: latest")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")

    p = commands.add_parser("report", help="comparison table and bar chart of exported models")
    with_root(p)
    p.add_argument("--extra", type=Path, action="append", default=[],
                   help="JSON list of extra rows (e.g. a baseline) with name, accuracy, macro_f1")
    p.add_argument("--png", type=Path, default=None, help="bar chart path (default: <root>/report.png)")

    p = commands.add_parser("label", help="point a version label (e.g. canary) at a version")
    with_root(p)
    p.add_argument("model")
    p.add_argument("label")
    p.add_argument("version", nargs="?", type=int, help="omit with --remove")
    p.add_argument("--remove", action="store_true")
    p.add_argument("--serving-base-path", default=DEFAULT_SERVING_BASE)

    p = commands.add_parser("prune", help="remove old versions, keeping the newest N and every labelled one")
    with_root(p)
    p.add_argument("models", nargs="*", help="model names (default: every model in the root)")
    p.add_argument("--keep", type=int, required=True, help="newest versions to keep per model (at least 1)")
    p.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    p.add_argument("--serving-base-path", default=DEFAULT_SERVING_BASE,
                   help="model root as TF Serving sees it, written into models.config")

    p = commands.add_parser("download", help="fetch reuters21578.tar.gz from the UCI repository")
    p.add_argument("--dest", type=Path, default=REPO / "data")
    return parser


def _load(corpus: Path | None):
    from training import dataset
    return dataset.load(corpus or default_corpus())


def cmd_data(args) -> int:
    from collections import Counter

    from training import dataset
    from training.corpus import read_corpus
    source = args.corpus or default_corpus()
    documents = read_corpus(source)
    data = dataset.build(documents)
    kept = data.train.documents + data.test.documents
    print(f"corpus          {source}")
    print(f"stories         {len(documents)}")
    print(f"with topics     {sum(1 for d in documents if d.topics)}")
    print(f"reuters46       {len(kept)} documents, {len(data.labels)} topics")
    print(f"split           train {len(data.train)}, test {len(data.test)}")
    print(f"empty bodies    {sum(1 for d in kept if not d.body)}")
    print(f"first labels    {', '.join(f'{i} {n}' for i, n in enumerate(data.labels[:5]))}, ... "
          f"{len(data.labels) - 1} {data.labels[-1]}")
    counts = Counter(data.labels[i] for i in data.train.y)
    print("largest topics  " + ", ".join(f"{n} {c}" for n, c in counts.most_common(5)))
    expected = (11228, 46, 8982, 2246)
    if (len(kept), len(data.labels), len(data.train), len(data.test)) != expected:
        raise CorpusError(f"reuters46 counts differ from the reference {expected}")
    print("checks          ok")
    return 0


def cmd_train(args) -> int:
    if args.variant != "all" and args.variant not in TRAINABLE:
        raise UsageError(f"unknown variant {args.variant!r}; choose one of {', '.join(TRAINABLE)} or all")
    from training.presets import preset
    shared = preset(args.preset, **_overrides(args))
    variants = [args.variant] if args.variant != "all" else [
        v for v in TRAINABLE if v != SENTENCE or shared.sentence_pieces]
    if args.name and len(variants) > 1:
        raise UsageError("--name needs a single --variant")
    settings = {variant: preset(args.preset, variant, **_overrides(args)) for variant in variants}
    if SENTENCE in variants:  # before hours of training the others, not after
        from training.sentence import encoder_folder
        encoder_folder(settings[SENTENCE].sentence_encoder)
    root = ModelRoot(args.model_root)
    root.ensure_writable()
    data = _load(args.corpus)
    if args.hold_out_validation:
        data = data.holding_out_validation(shared.val_fraction, args.seed)
        print(f"holding out the validation split: training on {len(data.train)} documents, "
              f"scoring on {len(data.test)} validation documents in place of test", flush=True)
    from training.ngrams import train_ngram
    from training.sentence import train_sentence
    from training.train import export_combinations, train_variant
    verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
    for variant in variants:
        started = time.perf_counter()
        print(f"[{variant}] training with preset {args.preset}", flush=True)
        if variant == NGRAM:
            m = train_ngram(data, settings[variant], root, name=args.name or NGRAM, preset=args.preset,
                            seed=args.seed, serving_base=args.serving_base_path)
        elif variant == SENTENCE:
            m = train_sentence(data, settings[variant], root, name=args.name or SENTENCE, preset=args.preset,
                               seed=args.seed, cache_dir=args.cache_dir, serving_base=args.serving_base_path)
        else:
            m = train_variant(data, variant, settings[variant], root, name=args.name, preset=args.preset,
                              seed=args.seed, log_dir=args.log_dir, verbose=verbose,
                              cache_dir=args.cache_dir, serving_base=args.serving_base_path,
                              kernels=args.kernels).metadata
        print(f"[{variant}] exported {m.model}/{m.version}: test accuracy "
              f"{m.metrics['test_accuracy']:.4f}, macro-F1 {m.metrics['test_macro_f1']:.4f}, "
              f"T={m.temperature:.2f}, {m.metrics['train_seconds']:.0f} s training, "
              f"{time.perf_counter() - started:.0f} s total", flush=True)
    if args.variant == "all" and not args.no_ensemble:
        for m in export_combinations(data, root, list(VARIANTS), shared, seed=args.seed,
                                     serving_base=args.serving_base_path):
            weights = ", ".join(f"{k} {w:.2f}" for k, w in m.settings["weights"].items())
            print(f"[{m.model}] exported {m.model}/{m.version} ({weights}): test accuracy "
                  f"{m.metrics['test_accuracy']:.4f}, macro-F1 {m.metrics['test_macro_f1']:.4f}", flush=True)
    print(f"models.config  {root.path / 'models.config'}")
    return 0


def cmd_evaluate(args) -> int:
    from training.evaluate import evaluate_export
    root = ModelRoot(args.model_root)
    version = args.version if args.version is not None else root.latest(args.model)
    if version is None or version not in root.versions(args.model):
        raise UsageError(f"no exported model {args.model!r}"
                         + (f" version {version}" if version else "") + f" under {root.path}")
    meta = root.read_metadata(args.model, version)
    data = _load(args.corpus)
    field = meta.settings.get("text", "title_body")
    result = evaluate_export(root, args.model, version, data.test.texts(field), data.test.y, data.labels)
    if args.json:
        print(json.dumps({"model": args.model, "version": version, "metrics": result.metrics,
                          "per_topic": result.per_topic}, indent=2))
        return 0
    m = result.metrics
    print(f"{args.model}/{version} on {int(m['n'])} test documents: accuracy {m['accuracy']:.4f}, "
          f"macro-F1 {m['macro_f1']:.4f}, ECE {m['ece']:.4f}")
    print(f"{'topic':<16}{'precision':>10}{'recall':>10}{'f1':>8}{'support':>9}")
    for name, t in sorted(result.per_topic.items(), key=lambda kv: -kv[1]["support"]):
        print(f"{name:<16}{t['precision']:>10.3f}{t['recall']:>10.3f}{t['f1']:>8.3f}{int(t['support']):>9}")
    for path in result.files:
        print(f"wrote {path}")
    return 0


def cmd_report(args) -> int:
    from training.report import Row, bar_chart, markdown_table, rows_from_root
    root = ModelRoot(args.model_root)
    rows = rows_from_root(root)
    for path in args.extra:
        try:
            rows += [Row(**row) for row in json.loads(path.read_text(encoding="utf-8"))]
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(f"cannot read extra rows from {path}: {exc}") from exc
    if not rows:
        raise UsageError(f"no exported models with test metrics under {root.path}")
    print(markdown_table(rows))
    print(f"wrote {bar_chart(rows, args.png or root.path / 'report.png')}")
    return 0


def cmd_label(args) -> int:
    if args.remove == (args.version is not None):
        raise UsageError("give a version, or --remove without one")
    ModelRoot(args.model_root).set_version_label(args.model, args.label, args.version,
                                                 args.serving_base_path)
    print(f"{args.model}: label {args.label} -> {args.version if not args.remove else 'removed'}")
    return 0


def cmd_prune(args) -> int:
    root = ModelRoot(args.model_root)
    present = root.models()
    unknown = [m for m in args.models if m not in present]
    if unknown:
        raise UsageError(f"no model {', '.join(map(repr, unknown))} under {root.path}")
    verb = "would remove" if args.dry_run else "removed"
    for model in args.models or present:
        before = root.versions(model)
        removed, held = root.prune(model, args.keep, dry_run=args.dry_run)
        left = [v for v in before if v not in removed]
        print(f"{model}: {verb} {', '.join(map(str, removed)) or 'nothing'}; "
              f"versions left {', '.join(map(str, left))}")
        for version, labels in held.items():
            print(f"{model}: kept {version}: label {', '.join(labels)} points to it")
    if not args.dry_run:  # also lists models copied in from elsewhere since the last write
        print(f"models.config  {root.write_models_config(args.serving_base_path)}")
    return 0


def cmd_download(args) -> int:
    from training.download import download
    print(f"wrote {download(args.dest)}")
    return 0


COMMANDS = {"data": cmd_data, "train": cmd_train, "evaluate": cmd_evaluate,
            "report": cmd_report, "label": cmd_label, "prune": cmd_prune, "download": cmd_download}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (UsageError, CorpusError, LayoutError, ValueError, FileNotFoundError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if hasattr(exc, "errors") and callable(exc.errors):  # pydantic: name the bad setting
            first = exc.errors()[0]
            message = f"invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}"
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
