"""What the serving benchmarks share: where the repository and corpus are, their common options, and
which version of the chosen model they measure."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from scoring.settings import BackendSettings
from training.layout import ModelRoot

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "reuters21578"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model-root``, ``--model``, ``--corpus`` and ``--no-write``."""
    parser.add_argument("--model-root", type=Path, default=BackendSettings().model_root)
    parser.add_argument("--model", default="gru")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")


def latest_version(parser: argparse.ArgumentParser, root: ModelRoot, model: str) -> int:
    """The newest version of ``model``; a usage error saying how to train one when there is none."""
    version = root.latest(model)
    if version is None:
        parser.error(f"no model {model!r} under {root.path}; train one first "
                     f"(python -m training train --variant {model} --preset quick)")
    return version


def mean_std(values: list[float], digits: int = 4) -> str:
    """``mean ± sample std`` of a benchmark's seeds; the value alone for one, a dash for none."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def write_rows(out: Path, rows: list[dict]) -> None:
    """Keep a trial's raw rows (under ``runs/``) beside the table it prints."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2), encoding="utf-8")
