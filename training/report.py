"""Comparison of exported models (and optional baselines): one Markdown table, one bar chart."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.layout import ModelRoot


@dataclass(frozen=True)
class Row:
    name: str
    accuracy: float
    macro_f1: float
    ece: float | None = None
    seconds_per_epoch: float | None = None
    threshold: float | None = None
    coverage: float | None = None
    note: str = ""


def rows_from_root(root: ModelRoot, models: list[str] | None = None) -> list[Row]:
    """One row per model's latest version, from the test metrics recorded at export."""
    rows = []
    for model in models or root.models():
        version = root.latest(model)
        if version is None:
            continue
        meta = root.read_metadata(model, version)
        m = meta.metrics
        if "test_accuracy" not in m:
            continue
        rows.append(Row(
            name=f"{model} v{version}", accuracy=m["test_accuracy"], macro_f1=m["test_macro_f1"],
            ece=m.get("test_ece"), seconds_per_epoch=m.get("seconds_per_epoch"),
            threshold=meta.threshold.value if meta.threshold else None,
            coverage=meta.threshold.coverage if meta.threshold else None,
            note=f"preset {meta.preset}, T={meta.temperature:.2f}"))
    return rows


def fmt(value: float | None, digits: int = 3) -> str:
    """A figure for a Markdown table; missing figures show as a dash."""
    return "—" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: list[Row]) -> str:
    lines = ["| model | test accuracy | macro-F1 | ECE | s / epoch | abstain threshold | coverage at ≥0.97 precision | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.name} | {fmt(r.accuracy)} | {fmt(r.macro_f1)} | {fmt(r.ece)} | "
                     f"{fmt(r.seconds_per_epoch, 1)} | {fmt(r.threshold)} | {fmt(r.coverage)} | {r.note} |")
    return "\n".join(lines)


def bar_chart(rows: list[Row], path: Path, title: str = "reuters46 test split") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows) + 2), 4.5))
    for offset, key, label in ((-0.2, "accuracy", "accuracy"), (0.2, "macro_f1", "macro-F1")):
        values = [getattr(r, key) for r in rows]
        bars = ax.bar(x + offset, values, width=0.4, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(x, [r.name for r in rows], rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
