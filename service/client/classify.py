"""``classify`` and ``models`` subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service.client.transport import common_options, open_transport


def add_commands(subparsers) -> None:
    common = common_options()
    classify = subparsers.add_parser(
        "classify", parents=[common], help="classify text (arguments, --file, or stdin)",
        description="Each TEXT argument is one document; without TEXT, --file or stdin is read.")
    classify.add_argument("texts", nargs="*", metavar="TEXT")
    classify.add_argument("--file", type=Path, help="read the text from this file ('-' for stdin)")
    classify.add_argument("--lines", action="store_true", help="one document per non-empty line of --file/stdin")
    classify.add_argument("--model", default="gru", help="model name (default: gru)")
    classify.add_argument("--top-k", type=int, default=None, help="topics per document (default: the gateway's)")
    version = classify.add_mutually_exclusive_group()
    version.add_argument("--version", type=int, help="pin a model version")
    version.add_argument("--version-label", help="pin a version label, e.g. stable")
    classify.add_argument("--json", action="store_true", help="print the raw JSON answer")
    classify.set_defaults(func=run_classify)

    models = subparsers.add_parser("models", parents=[common], help="list models, versions and status")
    models.add_argument("--json", action="store_true", help="print the raw JSON answer")
    models.set_defaults(func=run_models)


def read_documents(args: argparse.Namespace) -> list[dict]:
    if args.texts:
        texts = list(args.texts)
    else:
        source = args.file
        if source is not None and str(source) != "-":
            raw = source.read_text(encoding="utf-8")
        elif source is not None or not sys.stdin.isatty():
            raw = sys.stdin.read()
        else:
            raise SystemExit("error: give TEXT, --file PATH, or pipe text on stdin")
        texts = [line for line in raw.splitlines() if line.strip()] if args.lines else [raw]
    return [{"text": text, "id": str(i + 1)} for i, text in enumerate(texts)]


def run_classify(args: argparse.Namespace) -> int:
    documents = read_documents(args)
    with open_transport(args) as transport:
        answer = transport.classify(documents, args.model, top_k=args.top_k, version=args.version,
                                    version_label=args.version_label)
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print(f"model {answer['model']} version {answer['version']}")
    for result in answer["results"]:
        topics = ", ".join(f"{t['name']} {t['probability']:.3f}" for t in result["topics"])
        flag = "  (abstained: below the confidence threshold)" if result["abstained"] else ""
        print(f"[{result['id']}] {topics}{flag}")
    return 0


def run_models(args: argparse.Namespace) -> int:
    with open_transport(args) as transport:
        answer = transport.models()
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    for model in answer["models"]:
        versions = ", ".join(str(v["version"]) for v in model["versions"])
        labels = ", ".join(f"{k}={v}" for k, v in sorted(model["version_labels"].items()))
        newest = model["versions"][-1] if model["versions"] else {}
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(newest.get("metrics", {}).items())[:4])
        state = "ready" if model["ready"] else "not ready"
        print(f"{model['name']}: versions {versions}{' (' + labels + ')' if labels else ''}; {state}; {metrics}")
    return 0
