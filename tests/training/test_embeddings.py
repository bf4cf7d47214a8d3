"""Word2vec pre-training of the embedding on the encoder's own token ids."""

from __future__ import annotations

import numpy as np
import pytest

from training import embeddings
from training.models import TextEncoder, build_classifier
from training.presets import preset

pytest.importorskip("gensim")


@pytest.fixture(scope="module")
def texts(reuters46) -> list[str]:
    return reuters46.train.texts()[:400]


@pytest.fixture(scope="module")
def encoder(texts) -> TextEncoder:
    encoder = TextEncoder(preset("default", vocab_size=3000, max_length=40, embedding_dim=16))
    encoder.adapt(texts)
    return encoder


def test_token_ids_are_the_whole_text(encoder, texts):
    rows = encoder.token_ids(texts[:3])
    assert [len(r) for r in rows] == [len(t.split()) for t in texts[:3]]
    assert all(r.min() >= 1 for r in rows)
    assert np.array_equal(rows[0][:40], encoder.encode(texts[:1])[0][:len(rows[0][:40])])


def test_pretrained_rows_for_seen_ids_random_rows_for_the_rest(encoder, texts):
    matrix = embeddings.pretrain(encoder, texts[:200], dim=16, epochs=2, seed=3)
    assert matrix.shape == (encoder.vocabulary_size(), 16) and matrix.dtype == np.float32
    seen = np.unique(np.concatenate(encoder.token_ids(texts[:200])))
    unseen = np.setdiff1d(np.arange(encoder.vocabulary_size()), seen)
    assert len(unseen) > 0
    assert np.all(np.abs(matrix[unseen]) <= embeddings.INIT_SCALE)
    # pre-trained rows are rescaled to the random rows' spread, not left at word2vec's
    assert abs(np.std(matrix[seen]) - embeddings.INIT_SCALE) < 1e-3
    assert not np.allclose(matrix[seen], 0)


def test_same_seed_same_vectors_in_a_new_run(encoder, texts):
    first = embeddings.pretrain(encoder, texts[:100], dim=16, epochs=1, seed=4)
    embeddings._memo.clear()
    again = embeddings.pretrain(encoder, texts[:100], dim=16, epochs=1, seed=4)
    other = embeddings.pretrain(encoder, texts[:100], dim=16, epochs=1, seed=5)
    assert first is not again and np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_classifier_starts_from_the_given_embeddings(encoder):
    settings = preset("quick", vocab_size=3000, max_length=40, embedding_dim=16, units=4)
    matrix = np.random.default_rng(0).normal(size=(encoder.vocabulary_size(), 16)).astype(np.float32)
    model = build_classifier("gru", settings, 46, encoder.vocabulary_size(), matrix)
    assert np.array_equal(model.get_layer("embedding").get_weights()[0], matrix)
