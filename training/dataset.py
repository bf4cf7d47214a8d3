"""The ``reuters46`` dataset: the same documents, labels and split as ``keras.datasets.reuters``.

Definition: stories with at least one topic, labelled with their first topic; topics with at
least 15 such stories are kept (11,228 stories, 46 topics).  Label ids follow the order of first
appearance reading the files in sorted order.  The split shuffles indices with
``numpy.random.RandomState(113)`` and keeps the first 80 % for training (8,982) and the rest
for test (2,246).  Validation data is always carved out of the training part.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.corpus import Document, read_corpus

NAME = "reuters46"
MIN_DOCUMENTS_PER_TOPIC = 15
SPLIT_SEED = 113
TEST_FRACTION = 0.2
TEXT_FIELDS = ("title_body", "body")


def texts_of(documents: tuple[Document, ...], field: str = "title_body") -> list[str]:
    """Model input text: ``title_body`` (title then body) or ``body`` alone."""
    if field == "body":
        return [d.body for d in documents]
    if field == "title_body":
        return [d.text for d in documents]
    raise ValueError(f"unknown text field {field!r}; choose one of {', '.join(TEXT_FIELDS)}")


@dataclass(frozen=True)
class Split:
    """Documents of one split with their integer labels (indices into ``Reuters46.labels``)."""

    documents: tuple[Document, ...]
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.documents)

    def texts(self, field: str = "title_body") -> list[str]:
        return texts_of(self.documents, field)

    def take(self, indices: np.ndarray) -> "Split":
        return Split(tuple(self.documents[i] for i in indices), self.y[indices])

    def head(self, n: int | None) -> "Split":
        """The first ``n`` documents (all when ``n`` is None): small slices for quick runs."""
        return self if n is None else self.take(np.arange(min(n, len(self))))


@dataclass(frozen=True)
class Reuters46:
    labels: tuple[str, ...]
    train: Split
    test: Split
    # Corpus stories outside reuters46 (no topic, or a topic too rare): text without a label.
    unlabelled: tuple[Document, ...] = ()

    def validation_split(self, fraction: float, seed: int) -> tuple[Split, Split]:
        """(fit, validation) carved out of the training part, stratified by topic when possible.

        Stratified so that rare topics still appear in validation, where temperature and the
        abstain threshold are fitted.
        """
        if not 0 < fraction < 1:
            raise ValueError("validation fraction must be between 0 and 1")
        rng = np.random.RandomState(seed)
        val: list[int] = []
        for label in np.unique(self.train.y):
            members = np.flatnonzero(self.train.y == label)
            rng.shuffle(members)
            n_val = int(round(len(members) * fraction))
            if len(members) > 1:
                val.extend(members[:max(n_val, 0)])
        val_idx = np.array(sorted(val), dtype=int)
        fit_idx = np.setdiff1d(np.arange(len(self.train)), val_idx)
        rng.shuffle(fit_idx)
        return self.train.take(fit_idx), self.train.take(val_idx)

    def holding_out_validation(self, fraction: float, seed: int) -> Reuters46:
        """The dataset with the fit split as its training part and validation as its test part.

        Training on it carves a validation split of its own out of the fit split, so a choice
        that sees validation (a refit on it, weights fitted on it) is scored on text that none
        of its models, nor any choice made for them, has read; the real test split stays unread.
        """
        fit, val = self.validation_split(fraction, seed)
        return Reuters46(self.labels, fit, val, self.unlabelled)


def build(documents: list[Document]) -> Reuters46:
    """Apply the reuters46 definition to the stories of the whole corpus, in file order."""
    topical = [d for d in documents if d.topics]
    counts = Counter(d.topics[0] for d in topical)
    kept = [d for d in topical if counts[d.topics[0]] >= MIN_DOCUMENTS_PER_TOPIC]
    labels: list[str] = []
    for d in kept:
        if d.topics[0] not in labels:
            labels.append(d.topics[0])
    index = {name: i for i, name in enumerate(labels)}
    y = np.array([index[d.topics[0]] for d in kept], dtype=np.int64)
    order = np.arange(len(kept))
    np.random.RandomState(SPLIT_SEED).shuffle(order)
    n_train = int(len(kept) * (1 - TEST_FRACTION))
    everything = Split(tuple(kept), y)
    in_dataset = {d.newid for d in kept}
    unlabelled = tuple(d for d in documents if d.newid not in in_dataset)
    return Reuters46(tuple(labels), everything.take(order[:n_train]), everything.take(order[n_train:]),
                     unlabelled)


def load(source: str | Path) -> Reuters46:
    """Read the corpus at ``source`` (folder or tar.gz) and build reuters46 from it."""
    return build(read_corpus(source))
