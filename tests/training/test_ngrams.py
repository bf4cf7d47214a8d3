"""The n-gram model: in-graph TF-IDF, fitted on the fit split only, exported with the raw-text signature."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.support.saved_model_cli import cli_output, printed_probabilities
from training.evaluate import ServingModel
from training.layout import INPUT_KEY, NGRAM, OUTPUT_KEY, SIGNATURE_NAME, ModelRoot
from training.ngrams import _ABSENT_BIAS, NGramClassifier, _sparse_rows, fit_vocabulary, nb_svm, train_ngram
from training.presets import preset

SLICE = dict(train_limit=400, test_limit=100)


@pytest.fixture(scope="module")
def ngram_root(tmp_path_factory, reuters46):
    root = ModelRoot(tmp_path_factory.mktemp("ngram"))
    train_ngram(reuters46, preset("quick", **SLICE), root, preset="tiny", seed=3)
    return root


def test_vocabulary_and_idf_follow_document_frequency():
    texts = ["oil prices rose", "oil prices fell", "wheat exports rose", "oil output"]
    vocabulary, idf = fit_vocabulary(texts, min_df=2)
    # in at least 2 documents: oil (3), prices (2), rose (2), "oil prices" (2); most frequent first
    assert vocabulary[0] == "oil" and sorted(vocabulary) == ["oil", "oil prices", "prices", "rose"]
    df = {"oil": 3, "prices": 2, "rose": 2, "oil prices": 2}
    expected = [np.log(5 / (1 + df[t])) + 1 for t in vocabulary]
    np.testing.assert_allclose(idf, expected, rtol=1e-6)


def test_features_are_sublinear_tfidf_l2_normalised():
    vocabulary, idf = ["oil", "prices", "oil prices"], np.array([1.0, 2.0, 3.0])
    layer = NGramClassifier(vocabulary, idf, np.zeros((3, 2)), np.zeros(2))
    dense = tf.sparse.to_dense(layer.features(tf.constant(["oil oil prices zzz", ""]))).numpy()
    raw = np.array([1 + np.log(2), 2.0, 3.0])  # oil twice, prices once, "oil prices" once; zzz unknown
    np.testing.assert_allclose(dense[0, 1:], raw / np.linalg.norm(raw), rtol=1e-5)
    assert dense[0, 0] == 0 and not dense[1].any()


def test_terms_can_come_from_another_split():
    """Trials cut texts another way (bench.char_ngram_trial); vocabulary and TF-IDF are the same."""
    def words(text):
        return tf.strings.split(text)  # as written: no lowercasing, no 2-grams

    vocabulary, idf = fit_vocabulary(["Oil oil", "Oil gas", "gas"], min_df=2, split=words)
    assert sorted(vocabulary) == ["Oil", "gas"]  # "oil" is in one document only
    np.testing.assert_allclose(idf, [np.log(4 / 3) + 1] * 2, rtol=1e-6)
    layer = NGramClassifier(vocabulary, idf, np.zeros((2, 1)), np.zeros(1), split=words)
    dense = tf.sparse.to_dense(layer.features(tf.constant(["Oil Oil gas oil", ""]))).numpy()
    column = {term: i + 1 for i, term in enumerate(vocabulary)}
    raw = np.array([1 + np.log(2), 1.0])  # Oil twice, gas once; oil unknown
    np.testing.assert_allclose(dense[0, [column["Oil"], column["gas"]]], raw / np.linalg.norm(raw), rtol=1e-5)
    assert not dense[1].any()


def test_vocabulary_comes_from_the_fit_split_only(ngram_root, reuters46):
    meta = ngram_root.read_metadata(NGRAM, 1)
    fit, val = reuters46.validation_split(meta.settings["val_fraction"], 3)
    fit_texts = fit.head(SLICE["train_limit"]).texts()
    min_df = meta.settings["ngram_min_df"]
    assert meta.metrics["n_terms"] == len(fit_vocabulary(fit_texts, min_df=min_df)[0])
    # the check can tell: with validation text the vocabulary would be another size
    assert len(fit_vocabulary(fit_texts + val.texts()[:200], min_df=min_df)[0]) != meta.metrics["n_terms"]


def test_refit_keeps_the_temperature_and_fits_on_validation_too(tmp_path, ngram_root, reuters46):
    plain = ngram_root.read_metadata(NGRAM, 1)
    root = ModelRoot(tmp_path)
    refit = train_ngram(reuters46, preset("quick", **SLICE, refit=True), root, preset="tiny", seed=3)
    assert refit.temperature == pytest.approx(plain.temperature)
    fit, val = reuters46.validation_split(plain.settings["val_fraction"], 3)
    both = fit.head(SLICE["train_limit"]).texts() + val.texts()
    assert refit.metrics["n_terms"] == len(fit_vocabulary(both, min_df=plain.settings["ngram_min_df"])[0])


def test_nb_svm_scores_unscaled_features_as_its_svms_score_scaled_ones(reuters46):
    from sklearn.svm import LinearSVC

    fit = reuters46.train.head(300)
    vocabulary, idf = fit_vocabulary(fit.texts(), min_df=2)
    layer = NGramClassifier(vocabulary, idf, np.zeros((len(vocabulary), 46)), np.zeros(46))
    x = _sparse_rows(layer.features, fit.texts())[:, 1:]
    weights, bias = nb_svm(x, fit.y, 46, c=1.0, seed=1)
    dense = x.toarray()
    for label in np.unique(fit.y)[:3]:  # three of the topics in the slice
        mine = fit.y == label
        p = (dense[mine] > 0).sum(axis=0) + 1.0
        q = (dense[~mine] > 0).sum(axis=0) + 1.0
        ratio = np.log(p / p.sum()) - np.log(q / q.sum())
        svm = LinearSVC(C=1.0, random_state=1).fit(dense * ratio, mine)
        np.testing.assert_allclose(dense @ weights[:, label] + bias[label], svm.decision_function(dense * ratio),
                                   rtol=1e-4, atol=1e-4)
    absent = sorted(set(range(46)) - set(fit.y.tolist()))
    assert absent and np.all(bias[absent] == _ABSENT_BIAS) and not weights[:, absent].any()
    assert (np.asarray(x @ weights + bias).argmax(axis=1) == fit.y).mean() > 0.9  # it learnt its fit split


def test_the_learner_setting_reaches_the_export(tmp_path, ngram_root, reuters46):
    nb = ngram_root.read_metadata(NGRAM, 1)
    assert nb.settings["ngram_learner"] == "nb-svm"
    root = ModelRoot(tmp_path)
    plain = train_ngram(reuters46, preset("quick", **SLICE, ngram_learner="svm"), root, preset="tiny", seed=3)
    assert plain.settings["ngram_learner"] == "svm" and plain.metrics["n_terms"] == nb.metrics["n_terms"]
    texts = reuters46.test.texts()[:20]
    served = [ServingModel(r.version_dir(NGRAM, 1)).predict(texts) for r in (ngram_root, root)]
    assert np.abs(served[0] - served[1]).max() > 0.01  # same features, another linear model


def test_export_has_the_raw_text_signature_labels_and_threshold(ngram_root):
    meta = ngram_root.read_metadata(NGRAM, 1)
    assert (meta.variant, meta.preset, meta.settings["seed"]) == (NGRAM, "tiny", 3)
    assert len(meta.labels) == 46 and ngram_root.read_labels(NGRAM, 1) == meta.labels
    assert meta.threshold is not None and 0 <= meta.metrics["test_accuracy"] <= 1
    assert meta.temperature != 1.0  # SVM scores need sharpening into probabilities
    signature = tf.saved_model.load(str(ngram_root.version_dir(NGRAM, 1))).signatures[SIGNATURE_NAME]
    spec = signature.structured_input_signature[1][INPUT_KEY]
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]
    assert list(signature.structured_outputs) == [OUTPUT_KEY]
    assert signature.structured_outputs[OUTPUT_KEY].shape.as_list() == [None, 46]


def test_empty_and_unknown_text_give_valid_probabilities(ngram_root):
    model = ServingModel(ngram_root.version_dir(NGRAM, 1))
    probs = model.predict(["", "   ", "qqqzx vvvwk", "Wheat exports to the Soviet Union rose", "!!!"])
    assert probs.dtype == np.float32 and probs.shape == (5, 46)
    assert np.all(np.isfinite(probs)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs[0], probs[2], atol=1e-6)  # nothing known: the bias alone
    assert not np.allclose(probs[3], probs[0])
    alone = model.predict(["Wheat exports to the Soviet Union rose"])
    np.testing.assert_allclose(alone[0], probs[3], atol=1e-6)


@pytest.mark.integration
def test_saved_model_cli_runs_on_raw_text(ngram_root):
    out = cli_output("run", "--dir", str(ngram_root.version_dir(NGRAM, 1)), "--tag_set", "serve",
                     "--signature_def", "serving_default", "--input_exprs", 'text=["Cocoa prices rose in Bahia", ""]')
    numbers = printed_probabilities(out)
    assert len(numbers) == 2 * 46
    assert abs(sum(numbers[:46]) - 1) < 1e-3 and abs(sum(numbers[46:]) - 1) < 1e-3
