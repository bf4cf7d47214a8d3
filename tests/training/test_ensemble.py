"""Weights of hybrids and ensembles: chosen on validation, baked into one SavedModel."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibration import apply_temperature
from training.ensemble import MIN_WEIGHT, PRODUCT, choose_weights, pool
from training.evaluate import ServingModel
from training.layout import NGRAM, ModelRoot
from training.ngrams import train_ngram
from training.presets import preset
from training.train import HYBRID, ensemble_members, export_combinations, hybrid_name, train_variant

TINY = dict(vocab_size=1500, max_length=32, embedding_dim=12, units=6, epochs=1, batch_size=32,
            train_limit=300, test_limit=100, patience=0)
SEED = 4


def _one_hot_ish(y: np.ndarray, right: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities that put ``right`` on the true label for a share of the rows, noise elsewhere."""
    probs = rng.dirichlet(np.ones(5), size=len(y))
    hit = rng.random(len(y)) < right
    probs[hit] = 0.02
    probs[hit, y[hit]] = 0.92
    return probs


def test_weights_favour_the_member_that_is_right_on_validation():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    good, weak, noise = _one_hot_ish(y, 0.9, rng), _one_hot_ish(y, 0.5, rng), rng.dirichlet(np.ones(5), 400)
    weights, temperature = choose_weights([weak, good, noise], y)
    assert weights.shape == (3,) and abs(weights.sum() - 1) < 1e-9 and np.all(weights >= 0)
    assert weights[1] > weights[0] > weights[2] and temperature > 0
    assert weights[2] == 0 or weights[2] >= MIN_WEIGHT
    again = choose_weights([weak, good, noise], y)  # deterministic
    np.testing.assert_array_equal(weights, again[0])
    # the mix is at least as likely as the best member alone
    mix = apply_temperature(pool([weak, good, noise], weights, PRODUCT), temperature)
    assert np.mean(np.log(mix[np.arange(400), y])) >= np.mean(np.log(good[np.arange(400), y])) - 1e-6


def test_a_useless_member_is_dropped():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 300)
    useless = np.full((300, 5), 0.2)
    weights, _ = choose_weights([_one_hot_ish(y, 0.95, rng), useless], y)
    assert weights[1] == 0 and weights[0] == 1


def test_the_ensemble_pools_the_sentence_member_unless_it_is_off():
    assert ensemble_members(["rnn", "gru"], preset("default")) == ["rnn", "gru", NGRAM, "sentence"]
    assert ensemble_members(["rnn", "gru"], preset("quick")) == ["rnn", "gru", NGRAM]
    assert ensemble_members(["gru"], preset("default", sentence_pieces=0)) == ["gru", NGRAM]


@pytest.fixture(scope="module")
def combined_root(tmp_path_factory, reuters46):
    root = ModelRoot(tmp_path_factory.mktemp("combined"))
    settings = preset("quick", **TINY)
    train_variant(reuters46, "gru", settings, root, preset="tiny", seed=SEED)
    train_ngram(reuters46, settings, root, preset="tiny", seed=SEED)
    export_combinations(reuters46, root, ["gru"], settings, seed=SEED)
    return root


def test_hybrid_weights_are_chosen_on_the_validation_split(combined_root, reuters46):
    name = hybrid_name("gru")
    meta = combined_root.read_metadata(name, 1)
    assert meta.variant == HYBRID
    _, val = reuters46.validation_split(preset("quick").val_fraction, SEED)
    texts = val.texts()
    members = [ServingModel(combined_root.version_dir(m, 1)).predict(texts) for m in ("gru", NGRAM)]
    expected, temperature = choose_weights(members, val.y)
    assert meta.settings["pooling"] == PRODUCT and meta.temperature == pytest.approx(temperature)
    chosen = meta.settings["weights"]
    kept = [m for m, w in zip(("gru", NGRAM), expected) if w > 0]
    assert list(chosen) == kept and meta.members == [f"{m}/1" for m in kept]
    np.testing.assert_allclose(list(chosen.values()), expected[expected > 0], rtol=1e-6)
    # the exported graph serves exactly that weighted geometric mean, at the fitted temperature
    kept_probs = [p[:50] for p, w in zip(members, expected) if w > 0]
    mixed = pool(kept_probs, expected[expected > 0], PRODUCT)
    served = ServingModel(combined_root.version_dir(name, 1)).predict(texts[:50])
    np.testing.assert_allclose(served, apply_temperature(mixed, meta.temperature), atol=1e-4)


def test_hybrid_is_one_savedmodel_with_its_own_threshold(combined_root):
    meta = combined_root.read_metadata(hybrid_name("gru"), 1)
    assert abs(sum(meta.settings["weights"].values()) - 1) < 1e-6
    assert meta.threshold is not None and "test_accuracy" in meta.metrics and len(meta.labels) == 46
    assert not (combined_root.path / "ensemble").exists()  # one variant: a hybrid, no ensemble
    probs = ServingModel(combined_root.version_dir(hybrid_name("gru"), 1)).predict(["", "Crude oil output was cut"])
    assert probs.shape == (2, 46) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
