"""Word embeddings pre-trained on the corpus's own text (word2vec skip-gram, gensim).

reuters46 gives some 8,000 labelled training stories; the corpus holds about 10,000 more stories
without a usable topic.  Their text, with the training stories', teaches the embedding which
words behave alike, so words seen rarely with a label still start near their neighbours.
Validation and test stories are never used.  Pre-training reads the encoder's own token ids, so
it sees exactly the tokenisation the model is trained and served with.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

import numpy as np

from training.models import TextEncoder

WINDOW = 5
NEGATIVE = 10
# Keras' "uniform" embedding initialiser draws from ±0.05; pre-trained rows are scaled alike.
INIT_SCALE = 0.05

_memo: dict[str, np.ndarray] = {}


def _stable_hash(text: str) -> int:
    """gensim seeds each word vector from a hash; Python's own ``hash`` changes per process."""
    return zlib.crc32(text.encode())


def _memo_key(vocabulary: list[str], texts: list[str], dim: int, epochs: int, seed: int) -> str:
    digest = hashlib.sha256(repr((dim, epochs, seed)).encode())
    for part in (vocabulary, texts):
        digest.update("\0".join(part).encode())
        digest.update(b"\1")
    return digest.hexdigest()


def pretrain(encoder: TextEncoder, texts: list[str], dim: int, epochs: int, seed: int,
             cache_dir: Path | None = None) -> np.ndarray:
    """Embedding matrix ``[vocabulary_size, dim]`` for ``encoder``'s vocabulary.

    Rows of ids that never occur in ``texts`` keep a uniform random start.  One worker thread
    keeps the result reproducible from ``seed``; the same inputs in one process are trained once
    (``--variant all`` shares them between variants), and with ``cache_dir`` once across
    processes (``word2vec-<key>.npy``, keyed by vocabulary, texts and settings).
    """
    try:
        from gensim.models import Word2Vec
    except ImportError as exc:
        raise RuntimeError("word2vec pre-training needs gensim: pip install 'newsclf[train]', "
                           "or train with --embedding-init random") from exc

    key = _memo_key(encoder.vectorizer.get_vocabulary(), texts, dim, epochs, seed)
    if key in _memo:
        return _memo[key]
    cached = None if cache_dir is None else Path(cache_dir) / f"word2vec-{key}.npy"
    if cached is not None and cached.is_file():
        _memo[key] = np.load(cached)
        return _memo[key]
    sequences = [[str(i) for i in row] for row in encoder.token_ids(texts) if len(row)]
    model = Word2Vec(sequences, vector_size=dim, window=WINDOW, min_count=1, sg=1, negative=NEGATIVE,
                     epochs=epochs, workers=1, seed=seed, hashfxn=_stable_hash)
    rng = np.random.default_rng(seed)
    matrix = rng.uniform(-INIT_SCALE, INIT_SCALE, (encoder.vocabulary_size(), dim)).astype(np.float32)
    vectors = model.wv.vectors
    rows = np.array([int(word) for word in model.wv.index_to_key])
    matrix[rows] = vectors * (INIT_SCALE / max(float(np.std(vectors)), 1e-12))
    _memo[key] = matrix
    if cached is not None:
        save_array(cached, matrix)
    return matrix


def save_array(path: Path, array: np.ndarray | dict[str, np.ndarray]) -> None:
    """Write ``path`` (``.npy``, or ``.npz`` for a dict) atomically, so a concurrent reader never
    loads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(partial, "wb") as fh:
        if isinstance(array, dict):
            np.savez(fh, **array)
        else:
            np.save(fh, array)
    partial.replace(path)
