"""The sentence member: the encoder as TensorFlow ops, its cache, and the exported raw-text model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.support.model_roots import graph_ops
from training.evaluate import ServingModel
from training.layout import INPUT_KEY, OUTPUT_KEY, SENTENCE, SIGNATURE_NAME, ModelRoot
from training.presets import preset
from training.savedmodel import load as load_savedmodel
from training.sentence import (
    ENCODER_FILES,
    OFFICIAL_DIGESTS,
    EncoderError,
    build_encoder,
    embed,
    encoder_folder,
    fit_regression,
    train_sentence,
)

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "minilm_reference.json"
SLICE = {"train_limit": 300, "test_limit": 100}
EMPTY_AND_UNKNOWN = ["", "   ", "zzqx vrrk ÿÿÿ ☃ \x03", "\u200b"]
# The tensorflow-text ops of BertTokenizer; TF Serving's model server links tensorflow-text's op
# library (SUPPORTED_TENSORFLOW_OPS in its model_servers/BUILD), which has these.  (FastBertTokenizer's
# ops were missing from it for a time: tensorflow/serving#2064.)
TEXT_OPS = {"CaseFoldUTF8", "NormalizeUTF8", "RegexSplitWithOffsets", "WordpieceTokenizeWithOffsets"}


@pytest.fixture(scope="module")
def settings(tiny_encoder):
    return preset("default", sentence_encoder=str(tiny_encoder), sentence_pieces=24, **SLICE)


@pytest.fixture(scope="module")
def sentence_root(tmp_path_factory, reuters46, settings):
    root = ModelRoot(tmp_path_factory.mktemp("sentence"))
    train_sentence(reuters46, settings, root, preset="tiny", seed=3,
                   cache_dir=tmp_path_factory.mktemp("cache"))
    return root


def test_export_takes_raw_text_and_returns_46_probabilities(sentence_root):
    signature = load_savedmodel(sentence_root.version_dir(SENTENCE, 1)).signatures[SIGNATURE_NAME]
    spec = signature.structured_input_signature[1][INPUT_KEY]
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]
    probs = signature(**{INPUT_KEY: tf.constant(["Cocoa prices rose in Bahia", *EMPTY_AND_UNKNOWN])})[OUTPUT_KEY]
    probs = probs.numpy()
    assert probs.shape == (5, 46) and np.isfinite(probs).all() and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_graph_needs_no_ops_but_tensorflow_texts_tokenizer(sentence_root):
    """Every op of the export is TensorFlow's own (as a process without tensorflow-text sees
    them) or one of BertTokenizer's."""
    ops = sorted(graph_ops(sentence_root.version_dir(SENTENCE, 1)))
    unknown = ("import sys, tensorflow; from tensorflow.python.framework import op_def_registry as r; "
               "print(' '.join(o for o in sys.argv[1:] if r.get(o) is None))")
    done = subprocess.run([sys.executable, "-c", unknown, *ops], capture_output=True, text=True, timeout=120,
                          check=True)
    assert set(done.stdout.split()) == TEXT_OPS


def test_without_tensorflow_text_loading_says_what_to_install(sentence_root):
    script = ("import sys; sys.modules['tensorflow_text'] = None\n"  # as if it were not installed
              "from training.savedmodel import MissingOpsError, load\n"
              "try:\n    load(sys.argv[1])\nexcept MissingOpsError as exc:\n    print(exc)")
    done = subprocess.run([sys.executable, "-c", script, str(sentence_root.version_dir(SENTENCE, 1))],
                          capture_output=True, text=True, timeout=120, check=True)
    assert "install tensorflow-text" in done.stdout and "CaseFoldUTF8" in done.stdout


def test_metadata_names_the_encoder_and_its_figures(sentence_root, tiny_encoder):
    meta = sentence_root.read_metadata(SENTENCE, 1)
    assert meta.variant == SENTENCE and meta.settings["sentence_pieces"] == 24
    assert meta.settings["sentence_encoder"] == str(tiny_encoder) and len(meta.settings["encoder_sha256"]) == 64
    assert 0 <= meta.metrics["val_accuracy"] <= 1 and meta.metrics["test_n"] == 100
    assert meta.threshold is not None and meta.temperature > 0


def test_export_computes_what_the_regression_was_fitted_on(sentence_root, reuters46, settings, tiny_encoder):
    """The served graph is the encoder the embeddings came from, then the fitted linear map."""
    texts = reuters46.test.texts()[:16]
    encoder = build_encoder(tiny_encoder, settings.sentence_pieces)
    x = embed(encoder, texts)
    fit, _ = reuters46.validation_split(settings.val_fraction, 3)
    fit = fit.head(settings.train_limit)
    kernel, bias, _ = fit_regression(embed(encoder, fit.texts()), fit.y, 46, seed=3)
    temperature = sentence_root.read_metadata(SENTENCE, 1).temperature
    logits = (x @ kernel + bias) / temperature
    want = np.exp(logits - logits.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    got = ServingModel(sentence_root.version_dir(SENTENCE, 1)).predict(texts)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_pieces_past_the_limit_are_not_read(tiny_encoder):
    encoder = build_encoder(tiny_encoder, 8)
    head = "oil prices rose sharply in tokyo"  # 6 words + [CLS] and [SEP]: exactly 8 pieces
    a, b = encoder(tf.constant([head, head + " wheat corn exports fell"])).numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)
    c = build_encoder(tiny_encoder, 12)(tf.constant([head + " wheat corn exports fell"])).numpy()[0]
    assert not np.allclose(a, c, atol=1e-4)


def test_embeddings_are_cached_by_text(tmp_path, tiny_encoder):
    calls = []
    encoder = build_encoder(tiny_encoder, 16)

    def counting(texts):
        calls.append(len(texts))
        return encoder(tf.constant(texts))

    cache = tmp_path / "cache.npz"
    first = embed(counting, ["oil prices", "wheat", "oil prices"], cache)
    assert calls == [2]  # the repeated text once
    second = embed(counting, ["wheat", "cocoa", "oil prices"], cache)
    assert calls == [2, 1]  # only the new text
    np.testing.assert_array_equal(second[[0, 2]], first[[1, 0]])
    assert second.dtype == np.float32 and second.shape == (3, 8)


def test_refit_keeps_the_first_fits_validation_figures(tmp_path, reuters46, settings):
    root = ModelRoot(tmp_path / "models")
    first = train_sentence(reuters46, settings, root, seed=3)
    refit = train_sentence(reuters46, settings.model_copy(update={"refit": True}), root, seed=3)
    assert refit.metrics["val_accuracy"] == pytest.approx(first.metrics["val_accuracy"])
    assert refit.temperature == pytest.approx(first.temperature)
    assert refit.version == 2


def test_missing_or_changed_encoder_files_are_refused(tmp_path, tiny_encoder):
    with pytest.raises(EncoderError, match="lacks vocab.txt"):
        for name in ENCODER_FILES:
            if name != "vocab.txt":
                (tmp_path / name).write_bytes((tiny_encoder / name).read_bytes())
        encoder_folder(str(tmp_path))
    with pytest.raises(EncoderError, match="sentence_pieces must be"):
        build_encoder(tiny_encoder, 65)  # past the encoder's position embeddings


def test_no_sentence_member_when_pieces_is_zero(tmp_path, reuters46, settings):
    with pytest.raises(EncoderError, match="sentence_pieces is 0"):
        train_sentence(reuters46, settings.model_copy(update={"sentence_pieces": 0}), ModelRoot(tmp_path), seed=3)


def test_installed_encoder_is_the_published_all_minilm_l6_v2():
    folder = encoder_folder(None)
    assert all((folder / name).is_file() for name in ENCODER_FILES)
    assert set(OFFICIAL_DIGESTS) <= set(ENCODER_FILES)


@pytest.mark.slow
def test_in_graph_encoder_matches_sentence_transformers():
    """Embeddings sentence-transformers computed for these texts with the same weights (64 pieces),
    kept in tests/data; the in-graph encoder must give the same directions."""
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    encoder = build_encoder(encoder_folder(None), reference["max_pieces"])
    got = embed(encoder, reference["texts"])
    want = np.array(reference["vectors"], np.float32)
    cosine = (got * want).sum(axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() > 0.99999, cosine
