"""The references a practitioner tries first: TF-IDF (word 1-2-grams) + a linear model on title+body.

LinearSVC and logistic regression, trained on the whole reuters46 training split (no validation
is held out: scikit-learn's defaults, nothing tuned) and scored on the same test split as the
served models.  Run alone with ``python -m bench.tfidf_baseline``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from training.dataset import Reuters46
from training.evaluate import classification_metrics

BASELINES = ("tfidf-linearsvc", "tfidf-logreg")


@dataclass
class BaselineResult:
    name: str
    accuracy: float
    macro_f1: float
    ece: float | None
    fit_seconds: float
    n_features: int


def run_baseline(data: Reuters46, name: str = "tfidf-linearsvc") -> BaselineResult:
    """Fit ``name`` (one of :data:`BASELINES`) on the training split, score the test split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    model = LinearSVC(C=1.0) if name == "tfidf-linearsvc" else LogisticRegression(C=10.0, max_iter=300)
    started = time.perf_counter()
    pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2), model)
    pipeline.fit(data.train.texts(), data.train.y)
    fit_seconds = time.perf_counter() - started
    if hasattr(pipeline, "predict_proba"):
        probs = np.zeros((len(data.test), len(data.labels)))
        probs[:, pipeline.classes_] = pipeline.predict_proba(data.test.texts())
    else:  # hard decisions: no probabilities, no ECE
        probs = np.eye(len(data.labels))[pipeline.predict(data.test.texts())]
    summary, _ = classification_metrics(data.test.y, probs, data.labels)
    ece = summary["ece"] if hasattr(pipeline, "predict_proba") else None
    return BaselineResult(name, summary["accuracy"], summary["macro_f1"], ece, fit_seconds,
                          len(pipeline[0].vocabulary_))


def main() -> None:
    from training.__main__ import default_corpus
    from training.dataset import load
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=None)
    args = parser.parse_args()
    data = load(args.corpus or default_corpus())
    for name in BASELINES:
        r = run_baseline(data, name)
        print(f"{name}: accuracy {r.accuracy:.4f}, macro-F1 {r.macro_f1:.4f}, "
              f"{r.n_features} features, fit {r.fit_seconds:.1f} s")


if __name__ == "__main__":
    main()
