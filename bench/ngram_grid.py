"""The n-gram model's settings on validation: min_df x C of the linear SVM, over seeds.

Each seed draws its own validation split (as training does); the vocabulary, IDF and SVM come
from the fit split only.  Accuracy is the SVM's argmax (the calibration temperature does not
change it).  Test accuracy is printed beside it for the record, never used to choose::

    python -m bench.ngram_grid --seeds 1,2,3 --min-df 1,2,3,4,6 --c 0.25,0.5,1,2,4,8,16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_CORPUS, REPO


def grid(corpus: Path, seeds: list[int], min_dfs: list[int], cs: list[float], val_fraction: float) -> list[dict]:
    from sklearn.svm import LinearSVC

    from training.dataset import load
    from training.ngrams import NGramClassifier, _sparse_rows, fit_vocabulary

    data = load(corpus)
    rows = []
    for seed in seeds:
        fit, val = data.validation_split(val_fraction, seed)
        texts = [fit.texts(), val.texts(), data.test.texts()]
        for min_df in min_dfs:
            vocabulary, idf = fit_vocabulary(texts[0], min_df)
            layer = NGramClassifier(vocabulary, idf, np.zeros((len(vocabulary), 1)), np.zeros(1))
            x_fit, x_val, x_test = (_sparse_rows(layer.features, t)[:, 1:] for t in texts)
            for c in cs:
                svm = LinearSVC(C=c, random_state=seed).fit(x_fit, fit.y)
                rows.append({"seed": seed, "min_df": min_df, "c": c, "terms": len(vocabulary),
                             "val_accuracy": float(np.mean(svm.predict(x_val) == val.y)),
                             "test_accuracy": float(np.mean(svm.predict(x_test) == data.test.y))})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| min_df | C | terms (mean) | val accuracy | test accuracy |", "|---:|---:|---:|---|---|"]
    for min_df, c in sorted({(r["min_df"], r["c"]) for r in rows}):
        mine = [r for r in rows if (r["min_df"], r["c"]) == (min_df, c)]
        val, test = (np.array([r[k] for r in mine]) for k in ("val_accuracy", "test_accuracy"))
        spread = (lambda a: f" ± {a.std(ddof=1):.4f}" if len(a) > 1 else "")
        lines.append(f"| {min_df} | {c:g} | {np.mean([r['terms'] for r in mine]):,.0f} | "
                     f"{val.mean():.4f}{spread(val)} | {test.mean():.4f}{spread(test)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--min-df", default="1,2,3,4,6")
    parser.add_argument("--c", default="0.25,0.5,1,2,4,8,16")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ngram-grid.json")
    args = parser.parse_args(argv)
    rows = grid(args.corpus, [int(s) for s in args.seeds.split(",")], [int(m) for m in args.min_df.split(",")],
                [float(c) for c in args.c.split(",")], args.val_fraction)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
