"""Language-model pre-training of the embedding and recurrent layer: runs, is cached, is
reproducible from the seed, and reads training-side text only."""

from __future__ import annotations

import numpy as np
import pytest

from training import pretrain
from training.layout import ModelRoot
from training.models import TextEncoder, build_classifier
from training.presets import preset
from training.train import pretraining_documents, train_variant

SMALL = dict(vocab_size=800, max_length=24, embedding_dim=8, units=4, lm_epochs=1, epochs=1,
             batch_size=32, train_limit=150, test_limit=60, patience=0, embedding_init="random")


@pytest.fixture(scope="module")
def corpus(reuters46):
    settings = preset("quick", **SMALL)
    fit, _ = reuters46.validation_split(settings.val_fraction, 2)
    fit = fit.head(settings.train_limit)
    encoder = TextEncoder(settings)
    encoder.adapt(fit.texts())
    texts = [d.text for d in pretraining_documents(reuters46, fit, settings.train_limit)]
    return settings, encoder, texts


def _weights(corpus, variant, seed, cache_dir=None):
    settings, encoder, texts = corpus
    pretrain._memo.clear()
    return pretrain.pretrain_encoder(encoder, texts, variant, settings, seed, cache_dir=cache_dir)


@pytest.mark.parametrize("variant", ["gru", "bilstm"])
def test_pretrained_weights_fit_the_classifier(corpus, variant):
    settings, encoder, _ = corpus
    weights = _weights(corpus, variant, seed=1)
    classifier = build_classifier(variant, settings, 46, encoder.vocabulary_size())
    before = classifier.get_layer(variant).get_weights()
    pretrain.load_into(classifier, variant, weights)
    after = classifier.get_layer(variant).get_weights()
    assert [w.shape for w in after] == [w.shape for w in before]
    for loaded, pretrained in zip(after, weights["recurrent"]):
        np.testing.assert_array_equal(loaded, pretrained)
    np.testing.assert_array_equal(classifier.get_layer("embedding").get_weights()[0], weights["embedding"][0])


def test_reproducible_from_the_seed(corpus):
    first, again, other = (_weights(corpus, "gru", seed) for seed in (5, 5, 6))
    for a, b in zip(first["recurrent"] + first["embedding"], again["recurrent"] + again["embedding"]):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first["recurrent"][0], other["recurrent"][0])


def test_cached_on_disk_and_reused(corpus, tmp_path):
    settings, encoder, texts = corpus
    trained = _weights(corpus, "gru", seed=3, cache_dir=tmp_path)
    files = list(tmp_path.glob("lm-*.npz"))
    assert len(files) == 1
    # a different text must not hit the cache: the key covers the texts
    assert files[0].name == f"lm-{pretrain.cache_key(encoder.vectorizer.get_vocabulary(), texts, 'gru', settings, 3, None)}.npz"
    files[0].touch()
    stamp = files[0].stat().st_mtime_ns
    reloaded = _weights(corpus, "gru", seed=3, cache_dir=tmp_path)  # memo cleared: from the file
    assert files[0].stat().st_mtime_ns == stamp
    for a, b in zip(trained["recurrent"], reloaded["recurrent"]):
        np.testing.assert_array_equal(a, b)


def test_training_pretrains_on_fit_and_unlabelled_text_only(tmp_path, reuters46):
    settings = preset("quick", **SMALL)
    cache = tmp_path / "cache"
    pretrain._memo.clear()
    meta = train_variant(reuters46, "gru", settings, ModelRoot(tmp_path / "models"), seed=2,
                         cache_dir=cache).metadata
    assert meta.settings["lm_epochs"] == 1 and meta.metrics["pretrain_seconds"] > 0
    fit, val = reuters46.validation_split(settings.val_fraction, 2)
    fit = fit.head(settings.train_limit)
    documents = pretraining_documents(reuters46, fit, settings.train_limit)
    ids = {d.newid for d in documents}
    assert not ids & {d.newid for d in val.documents} and not ids & {d.newid for d in reuters46.test.documents}
    # the cached encoder was trained on exactly those texts (the key covers every text)
    encoder = TextEncoder(settings)
    encoder.adapt(fit.texts())
    key = pretrain.cache_key(encoder.vectorizer.get_vocabulary(), [d.text for d in documents], "gru",
                             settings, 2, None)
    assert [p.name for p in cache.glob("lm-*.npz")] == [f"lm-{key}.npz"]


@pytest.mark.parametrize(("epochs", "unfreeze", "lm", "expected"), [
    (12, 1, 1, [(("embedding", "gru"), 1), (("embedding",), 2), ((), 12)]),
    (12, 0, 1, [((), 12)]),
    (12, 3, 0, [((), 12)]),  # nothing pre-trained: nothing to protect
    (2, 1, 1, [(("embedding", "gru"), 1), (("embedding",), 2)]),
    (1, 4, 1, [(("embedding", "gru"), 1)]),
])
def test_unfreezing_stages_from_the_top_down(epochs, unfreeze, lm, expected):
    settings = preset("quick", **{**SMALL, "epochs": epochs, "lm_unfreeze_epochs": unfreeze, "lm_epochs": lm})
    assert pretrain.unfreezing_stages("gru", settings) == expected


@pytest.mark.parametrize("unfreeze", [1, 0])
def test_frozen_layers_keep_their_pretrained_weights(tmp_path, reuters46, unfreeze):
    """With one epoch and unfreezing on, only the head learns: the embedding and recurrent layer
    leave training exactly as pre-training left them; without it, they move."""
    settings = preset("quick", **{**SMALL, "lm_unfreeze_epochs": unfreeze})
    pretrain._memo.clear()
    result = train_variant(reuters46, "gru", settings, ModelRoot(tmp_path / "models"), seed=2,
                           cache_dir=tmp_path / "cache")
    fit, _ = reuters46.validation_split(settings.val_fraction, 2)
    texts = [d.text for d in pretraining_documents(reuters46, fit.head(settings.train_limit), settings.train_limit)]
    pretrained = pretrain.pretrain_encoder(result.encoder, texts, "gru", settings, 2, cache_dir=tmp_path / "cache")
    trained = result.classifier.get_layer("gru").get_weights() + result.classifier.get_layer("embedding").get_weights()
    same = [np.array_equal(a, b) for a, b in zip(trained, pretrained["recurrent"] + pretrained["embedding"])]
    assert all(same) if unfreeze else not any(same)
    assert len(result.history["loss"]) == 1
