"""Exported SavedModels: layout, signature on raw strings, metadata, warmup, models.config."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from training.evaluate import ServingModel
from training.layout import ENSEMBLE, EXTRA_DIR, INPUT_KEY, OUTPUT_KEY, SIGNATURE_NAME, WARMUP_FILE, ModelRoot
from training.savedmodel import load as load_savedmodel

TEXTS = ["Brazil cocoa harvest improves after rains in Bahia",
         "Crude oil prices rose sharply as OPEC cut output",
         "", "&lt;weird&gt; ünïcödé text \x03 with control chars"]


def test_fixture_root_holds_the_tiny_models(tiny_model_root):
    root = ModelRoot(tiny_model_root)
    assert root.models() == ["ensemble", "gru", "rnn", "sentence"]
    for model in root.models():
        assert root.versions(model) == [1]
        meta = root.read_metadata(model, 1)
        assert meta.version == 1 and meta.model == model
        assert len(meta.labels) == 46 and meta.labels[:5] == ["cocoa", "grain", "veg-oil", "earn", "acq"]
        assert root.read_labels(model, 1) == meta.labels
        assert meta.threshold is not None and 0 <= meta.threshold.coverage <= 1
        assert meta.tensorflow_version == tf.__version__
    assert root.read_metadata(ENSEMBLE, 1).members == ["rnn/1", "gru/1", "sentence/1"]
    config = (tiny_model_root / "models.config").read_text()
    for model in ("rnn", "gru", "sentence", "ensemble"):
        assert f'name: "{model}"' in config and f'base_path: "/models/{model}"' in config


@pytest.mark.parametrize("model", ["rnn", "gru", "sentence", "ensemble"])
def test_signature_takes_raw_strings_and_returns_46_probabilities(tiny_model_root, model):
    loaded = load_savedmodel(tiny_model_root / model / "1")
    signature = loaded.signatures[SIGNATURE_NAME]
    assert list(signature.structured_input_signature[1]) == [INPUT_KEY]
    spec = signature.structured_input_signature[1][INPUT_KEY]
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]
    out = signature(**{INPUT_KEY: tf.constant(TEXTS)})
    assert list(out) == [OUTPUT_KEY]
    probs = out[OUTPUT_KEY].numpy()
    assert probs.dtype == np.float32 and probs.shape == (len(TEXTS), 46)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert np.all(probs >= 0)
    # one text alone gets the same answer as inside a batch: no cross-talk through padding
    alone = signature(**{INPUT_KEY: tf.constant(TEXTS[1:2])})[OUTPUT_KEY].numpy()
    np.testing.assert_allclose(alone[0], probs[1], atol=1e-5)


def test_ensemble_averages_its_members(tiny_model_root):
    root = ModelRoot(tiny_model_root)
    meta = root.read_metadata(ENSEMBLE, 1)
    members = [ServingModel(tiny_model_root / m / "1").predict(TEXTS) for m in ("rnn", "gru", "sentence")]
    averaged = np.mean(members, axis=0)
    logits = np.log(np.maximum(averaged, 1e-12)) / meta.temperature
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    got = ServingModel(tiny_model_root / ENSEMBLE / "1").predict(TEXTS)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_test_metrics_in_metadata_match_a_fresh_evaluation(tiny_model_root, reuters46):
    from training.evaluate import classification_metrics
    root = ModelRoot(tiny_model_root)
    meta = root.read_metadata("gru", 1)
    test = reuters46.test.head(int(meta.metrics["test_n"]))
    probs = ServingModel(root.version_dir("gru", 1)).predict(test.texts(meta.settings["text"]))
    summary, _ = classification_metrics(test.y, probs, reuters46.labels)
    assert summary["accuracy"] == pytest.approx(meta.metrics["test_accuracy"])
    assert summary["macro_f1"] == pytest.approx(meta.metrics["test_macro_f1"])


@pytest.mark.parametrize("model", ["rnn", "ensemble"])
def test_warmup_file_holds_predict_requests_for_the_model(tiny_model_root, model):
    from tensorflow_serving.apis import prediction_log_pb2
    path = tiny_model_root / model / "1" / EXTRA_DIR / WARMUP_FILE
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert 1 <= len(records) <= 10
    serving = ServingModel(tiny_model_root / model / "1")
    for raw in records:
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        request = log.predict_log.request
        assert request.model_spec.name == model
        assert request.model_spec.signature_name == SIGNATURE_NAME
        texts = [t.decode() for t in tf.make_ndarray(request.inputs[INPUT_KEY]).ravel()]
        assert texts and all(texts)
        assert serving.predict(texts).shape == (len(texts), 46)
