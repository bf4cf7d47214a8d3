"""Tiny real trainings of each variant, the encoder, reproducibility and CPU-only kernels."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluate import ServingModel
from training.export import validation_probabilities
from training.layout import NGRAM, VARIANTS, LayoutError, ModelRoot
from training.models import TextEncoder, build_classifier
from training.ngrams import train_ngram
from training.presets import PRESETS, preset
from training.train import class_weights, export_combinations, train_variant

TINY = dict(vocab_size=1500, max_length=32, embedding_dim=12, units=6, epochs=1, batch_size=32,
            train_limit=300, test_limit=120, patience=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_trains_and_exports(tmp_path, reuters46, variant):
    root = ModelRoot(tmp_path)
    result = train_variant(reuters46, variant, preset("quick", **TINY), root, preset="tiny", seed=5)
    meta = result.metadata
    assert (meta.model, meta.version, meta.variant) == (variant, 1, variant)
    assert meta.settings["units"] == 6 and meta.settings["seed"] == 5
    assert set(result.history) >= {"loss", "val_loss", "accuracy", "val_accuracy"}
    assert meta.metrics["test_n"] == 120 and 0 <= meta.metrics["test_accuracy"] <= 1
    assert meta.metrics["epochs_run"] == 1 and meta.metrics["seconds_per_epoch"] > 0
    probs = ServingModel(root.version_dir(variant, 1)).predict(["Wheat exports to the Soviet Union rose"])
    assert probs.shape == (1, 46) and abs(probs.sum() - 1) < 1e-4
    ops = _graph_ops(root.version_dir(variant, 1))
    assert "While" in ops and not any("Cudnn" in op for op in ops)  # generic kernels: CPU and GPU


def test_word2vec_pretraining_runs_before_training(tmp_path, reuters46):
    pytest.importorskip("gensim")
    settings = preset("quick", **TINY, embedding_init="word2vec", word2vec_epochs=1)
    meta = train_variant(reuters46, "gru", settings, ModelRoot(tmp_path), seed=5).metadata
    assert meta.settings["embedding_init"] == "word2vec"
    assert meta.metrics["pretrain_seconds"] > 0
    assert 0 <= meta.metrics["test_accuracy"] <= 1


def test_weight_averaging_exports_the_average(tmp_path, reuters46):
    """Keras starts the average at the weights after the first step; with a momentum next to 1
    it stays there, so a second epoch must not change what is exported. Without averaging it does."""
    texts = reuters46.test.texts()[:20]

    def exported(name: str, **settings) -> tuple[np.ndarray, object]:
        root = ModelRoot(tmp_path / name)
        result = train_variant(reuters46, "gru", preset("quick", **{**TINY, "patience": 5, **settings}), root,
                               seed=3)
        return ServingModel(root.version_dir("gru", 1)).predict(texts), result

    one, _ = exported("ema-1", ema_momentum=0.999999, epochs=1)
    two, result = exported("ema-2", ema_momentum=0.999999, epochs=2)
    np.testing.assert_allclose(one, two, atol=1e-4)
    raw_one, _ = exported("raw-1", epochs=1)
    raw_two, _ = exported("raw-2", epochs=2)
    assert np.abs(raw_one - raw_two).max() > 1e-3
    # validation saw the average too: the exported model scores as the history's restored epoch did
    best = int(np.argmin(result.history["val_loss"]))
    assert result.metadata.metrics["val_accuracy"] == pytest.approx(result.history["val_accuracy"][best], abs=0.01)


def _graph_ops(path) -> set[str]:
    from tensorflow.core.protobuf import saved_model_pb2
    saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    ops = set()
    for graph in saved.meta_graphs:
        ops |= {node.op for node in graph.graph_def.node}
        for function in graph.graph_def.library.function:
            ops |= {node.op for node in function.node_def}
    return ops


@pytest.mark.slow
def test_training_learns_beyond_the_majority_topic(tmp_path, reuters46):
    settings = preset("quick", vocab_size=4000, max_length=64, embedding_dim=32, units=24, epochs=4,
                      train_limit=2000, test_limit=400, patience=2)
    meta = train_variant(reuters46, "gru", settings, ModelRoot(tmp_path), seed=2).metadata
    majority = np.mean(reuters46.test.head(400).y == np.bincount(reuters46.train.y).argmax())
    assert meta.metrics["test_accuracy"] > majority + 0.1


def test_same_seed_gives_the_same_model(tmp_path, reuters46):
    settings = preset("quick", **TINY)
    texts = reuters46.test.texts()[:20]
    runs = []
    for i in range(2):
        root = ModelRoot(tmp_path / str(i))
        train_variant(reuters46, "rnn", settings, root, seed=11)
        runs.append(ServingModel(root.version_dir("rnn", 1)).predict(texts))
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-5)


def test_init_seed_starts_again_on_the_same_split(tmp_path, reuters46):
    """Another ``init_seed`` gives other weights from the same split (the same vocabulary, fitted on
    the same fit texts); the same ``init_seed`` gives the same model again."""
    texts = reuters46.test.texts()[:20]
    runs = {}
    for name, init in (("a", 7), ("again", 7), ("other", 8)):
        result = train_variant(reuters46, "rnn", preset("quick", **TINY, init_seed=init), ModelRoot(tmp_path / name),
                               seed=11)
        runs[name] = (result.encoder.vectorizer.get_vocabulary(),
                      ServingModel(tmp_path / name / "rnn" / "1").predict(texts))
    assert runs["a"][0] == runs["other"][0]
    np.testing.assert_allclose(runs["a"][1], runs["again"][1], atol=1e-5)
    assert not np.allclose(runs["a"][1], runs["other"][1], atol=1e-3)


@pytest.fixture(scope="module")
def refit_roots(tmp_path_factory, reuters46):
    """gru and ngram trained twice from one seed: as validation chose them, and refitted."""
    roots, runs = {}, {}
    for arm, refit in (("plain", False), ("refit", True)):
        roots[arm] = ModelRoot(tmp_path_factory.mktemp(arm))
        settings = dict(TINY, epochs=3, patience=3, refit=refit)
        runs[arm] = train_variant(reuters46, "gru", preset("quick", **settings), roots[arm], seed=4)
        train_ngram(reuters46, preset("quick", **settings), roots[arm], seed=4)
    return roots, runs


def test_refit_trains_again_on_validation_for_the_epochs_it_chose(refit_roots, reuters46):
    """The refit keeps what the plain run chose on validation (its temperature and best epoch) and
    learns from validation text too: its vocabulary has words no fit text has."""
    import keras

    roots, runs = refit_roots
    plain, refit = runs["plain"], runs["refit"]
    best = int(np.argmin(plain.history["val_loss"])) + 1
    assert refit.metadata.metrics["refit_epochs"] == best and "refit_epochs" not in plain.metadata.metrics
    assert refit.metadata.temperature == pytest.approx(plain.metadata.temperature)
    assert refit.history == plain.history  # the history kept is the run validation judged

    fit, _ = reuters46.validation_split(refit.metadata.settings["val_fraction"], 4)
    every_fit_word = keras.layers.TextVectorization()
    every_fit_word.adapt(fit.head(TINY["train_limit"]).texts())
    unseen = set(refit.encoder.vectorizer.get_vocabulary()) - set(every_fit_word.get_vocabulary())
    assert unseen and not set(plain.encoder.vectorizer.get_vocabulary()) - set(every_fit_word.get_vocabulary())
    texts = reuters46.test.texts()[:20]
    assert not np.allclose(ServingModel(roots["plain"].version_dir("gru", 1)).predict(texts),
                           ServingModel(roots["refit"].version_dir("gru", 1)).predict(texts), atol=1e-3)


@pytest.mark.parametrize("model", ["gru", NGRAM])
def test_a_refit_keeps_the_validation_figures_of_the_model_validation_chose(refit_roots, reuters46, model):
    """Its validation probabilities, accuracy and abstain threshold are the first model's, not
    those of a model that has read validation."""
    roots, _ = refit_roots
    _, val = reuters46.validation_split(0.1, 4)
    kept = {arm: validation_probabilities(root, model, 1, (val.texts(), val.y))
            for arm, root in roots.items()}
    np.testing.assert_allclose(kept["refit"], kept["plain"], atol=1e-4)
    plain, refit = (root.read_metadata(model, 1) for root in roots.values())
    assert refit.metrics["val_accuracy"] == pytest.approx(plain.metrics["val_accuracy"])
    assert refit.threshold.value == pytest.approx(plain.threshold.value, abs=1e-4)
    assert refit.threshold.coverage == pytest.approx(plain.threshold.coverage)
    # not the refitted export's own, which has read validation
    served = ServingModel(roots["refit"].version_dir(model, 1)).predict(val.texts())
    assert not np.allclose(served, kept["refit"], atol=1e-3)


def test_refitted_members_are_weighed_by_the_first_models_on_validation(refit_roots, reuters46):
    """`train --variant all --refit` exports hybrids and the ensemble: weights fitted on the
    probabilities of the models validation chose, pooled over the refitted members."""
    roots, _ = refit_roots
    settings = preset("quick", **TINY)
    hybrids = {arm: export_combinations(reuters46, root, ["gru"], settings, seed=4)[0]
               for arm, root in roots.items()}
    assert hybrids["refit"].settings["weights"] == pytest.approx(hybrids["plain"].settings["weights"], abs=1e-3)
    assert hybrids["refit"].temperature == pytest.approx(hybrids["plain"].temperature, rel=1e-3)
    texts = reuters46.test.texts()[:20]
    assert not np.allclose(ServingModel(roots["plain"].version_dir("gru-ngram", 1)).predict(texts),
                           ServingModel(roots["refit"].version_dir("gru-ngram", 1)).predict(texts), atol=1e-3)

    _, other = reuters46.validation_split(0.1, 5)  # another seed's validation: the refit has read some of it
    with pytest.raises(LayoutError, match="refitted on validation"):
        validation_probabilities(roots["refit"], "gru", 1, (other.texts(), other.y))
    assert validation_probabilities(roots["plain"], "gru", 1, (other.texts(), other.y)).shape == (len(other), 46)


@pytest.mark.parametrize("padding,truncating,expected", [
    ("post", "post", [[2, 3, 4, 5], [3, 0, 0, 0]]),
    ("pre", "pre", [[3, 4, 5, 6], [0, 0, 0, 3]]),
    ("pre", "post", [[2, 3, 4, 5], [0, 0, 0, 3]]),
])
def test_encoder_pads_and_truncates(padding, truncating, expected):
    encoder = TextEncoder(preset("default", max_length=4, padding=padding, truncating=truncating))
    encoder.vectorizer.set_vocabulary(["a", "b", "c", "d", "e"])  # ids 2..6; 1 is out-of-vocabulary
    got = encoder.encode(["A, b c d e!", "b"])
    assert got.tolist() == expected


def test_encoder_handles_empty_and_unknown_text():
    encoder = TextEncoder(preset("default", max_length=3))
    encoder.vectorizer.set_vocabulary(["oil"])
    assert encoder.encode(["", "zinc OIL"]).tolist() == [[0, 0, 0], [1, 2, 0]]


def test_seed_preset_matches_the_reference_notebook():
    seed = PRESETS["seed"]
    assert (seed["vocab_size"], seed["embedding_dim"], seed["units"], seed["epochs"],
            seed["batch_size"], seed["max_length"], seed["text"]) == (10000, 100, 32, 5, 128, 500, "body")
    model = build_classifier("rnn", preset("seed"), 46)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "Embedding", "SimpleRNN", "Dense"]
    assert seed["embedding_init"] == "random"
    assert preset("default").embedding_init == "word2vec"


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown variant 'cnn'"):
        build_classifier("cnn", preset("quick"), 46)


def test_variant_tuning_applies_under_command_line_overrides():
    assert preset("default", "lstm").learning_rate == 4e-3
    assert preset("default", "gru").learning_rate == preset("default").learning_rate
    assert preset("default", "lstm", learning_rate=1e-3).learning_rate == 1e-3
    assert preset("quick", "lstm").learning_rate == PRESETS["quick"]["learning_rate"]
    assert preset("default", "bilstm").class_weight == "sqrt" and preset("default", "gru").class_weight == "none"
    assert preset("default", "bilstm", class_weight="none").class_weight == "none"
    assert preset("default", "gru").units == preset("default", "rnn").units == 128
    assert preset("default", "lstm").units == preset("default").units


def test_square_root_class_weights_favour_rare_topics_and_average_one():
    y = np.array([0] * 90 + [1] * 9 + [2])  # topic 3 absent
    weights = class_weights(y, 4, "sqrt")
    assert weights[3] == 0 and weights[2] > weights[1] > weights[0]
    assert weights[2] / weights[0] == pytest.approx(np.sqrt(90))  # the square root of the frequency ratio
    assert np.mean([weights[label] for label in y]) == pytest.approx(1.0)  # the loss keeps its scale
    assert class_weights(y, 4, "none") is None
