"""The reference a practitioner tries first: TF-IDF (word 1-2-grams) + linear SVM on title+body.

Trained on the same reuters46 training split and scored on the same test split as the
recurrent models.  Run alone with ``python -m bench.tfidf_baseline``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from training.dataset import Reuters46
from training.evaluate import classification_metrics


@dataclass
class BaselineResult:
    accuracy: float
    macro_f1: float
    fit_seconds: float
    n_features: int


def run_baseline(data: Reuters46, c: float = 1.0) -> BaselineResult:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    started = time.perf_counter()
    pipeline = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
        LinearSVC(C=c))
    pipeline.fit(data.train.texts(), data.train.y)
    fit_seconds = time.perf_counter() - started
    predicted = pipeline.predict(data.test.texts())
    one_hot = np.eye(len(data.labels))[predicted]  # hard decisions: no probabilities, no ECE
    summary, _ = classification_metrics(data.test.y, one_hot, data.labels)
    return BaselineResult(summary["accuracy"], summary["macro_f1"], fit_seconds,
                          len(pipeline[0].vocabulary_))


def main() -> None:
    from training.__main__ import default_corpus
    from training.dataset import load
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=None)
    args = parser.parse_args()
    result = run_baseline(load(args.corpus or default_corpus()))
    print(f"TF-IDF + LinearSVC: accuracy {result.accuracy:.4f}, macro-F1 {result.macro_f1:.4f}, "
          f"{result.n_features} features, fit {result.fit_seconds:.1f} s")


if __name__ == "__main__":
    main()
