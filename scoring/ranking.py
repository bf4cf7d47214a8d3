"""Ranking: the top-k topics of each document, most probable first, and whether to abstain.

The gateway's answers and the batch jobs' result rows are both built from ``rank``, so one
model ranks, ties and abstains the same way through the API and through a job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ranking:
    """Top-k label indices and probabilities per document, and which documents abstain."""

    indices: np.ndarray        # [documents, k] int, most probable first; ties keep label order
    probabilities: np.ndarray  # [documents, k] float64
    abstained: np.ndarray      # [documents] bool: the best probability is under the threshold


def rank(probabilities: np.ndarray, top_k: int, threshold: float | None) -> Ranking:
    """Rank each row of ``probabilities`` (``[documents, labels]``); ``top_k`` is capped at the
    number of labels. A document abstains when its best probability is below ``threshold``."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    k = min(top_k, probabilities.shape[1])
    indices = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    best = np.take_along_axis(probabilities, indices, axis=1)
    if threshold is None:
        abstained = np.zeros(len(probabilities), dtype=bool)
    else:
        abstained = best[:, 0] < threshold
    return Ranking(indices, best, abstained)


def topic_rows(ranking: Ranking, labels: Sequence[str]) -> list[list[tuple[str, float]]]:
    """``(label, probability)`` pairs per document, in ranking order."""
    return [[(labels[i], p) for i, p in zip(indices, probs)]
            for indices, probs in zip(ranking.indices.tolist(), ranking.probabilities.tolist())]
