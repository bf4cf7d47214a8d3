"""Work in proportion to real text length: batches cut to their longest text (serving), length-
bucketed training batches, and the cuDNN export flavour."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.support.model_roots import graph_ops
from tests.support.processes import wait_for
from training.evaluate import ServingModel
from training.export import PAD_TO_MAX_LENGTH, write_serving_model
from training.layout import CUDNN, ENCODE_SIGNATURE, IDS_SIGNATURE, SIGNATURE_NAME
from training.lengths import fit_arguments, length_batches, trim_to_longest
from training.models import TextEncoder, build_classifier
from training.presets import preset

SMALL = dict(vocab_size=3000, embedding_dim=16, units=8, embedding_init="random", batch_size=32)
FIT_DOCS = 300


def _trained(reuters46, variant: str, **overrides):
    """(encoder, classifier) fitted for one epoch on a few hundred training stories."""
    settings = preset("default", variant, **{**SMALL, **overrides})
    texts = reuters46.train.texts()[:FIT_DOCS]
    encoder = TextEncoder(settings)
    encoder.adapt(texts)
    classifier = build_classifier(variant, settings, len(reuters46.labels), encoder.vocabulary_size())
    classifier.compile("adam", "sparse_categorical_crossentropy")
    x, y = encoder.encode(texts), reuters46.train.y[:FIT_DOCS]
    classifier.fit(**fit_arguments(settings, (x, y), (x[:64], y[:64]), seed=3), epochs=1, verbose=0)
    return encoder, classifier


@pytest.fixture(scope="module", params=[("gru", "post"), ("bilstm", "post"), ("gru", "pre")],
                ids=["gru", "bilstm", "gru-pre-padded"])
def exports(request, reuters46, tmp_path_factory):
    """The same weights exported twice: padded to the batch's longest text, and to max_length."""
    variant, padding = request.param
    encoder, classifier = _trained(reuters46, variant, padding=padding, truncating=padding)
    folder = tmp_path_factory.mktemp(f"{variant}-{padding}")
    write_serving_model(folder / "longest", encoder, classifier)
    write_serving_model(folder / "fixed", encoder, classifier, pad_to=PAD_TO_MAX_LENGTH)
    return ServingModel(folder / "longest"), ServingModel(folder / "fixed")


def test_trim_keeps_the_columns_that_hold_tokens():
    ids = tf.constant([[5, 6, 0, 0, 0], [7, 0, 0, 0, 0]])
    assert trim_to_longest(ids, "post").numpy().tolist() == [[5, 6], [7, 0]]
    pre = tf.constant([[0, 0, 0, 5, 6], [0, 0, 0, 0, 7]])
    assert trim_to_longest(pre, "pre").numpy().tolist() == [[5, 6], [0, 7]]
    assert trim_to_longest(tf.zeros([3, 5], tf.int32), "post").shape == (3, 1)
    full = tf.ones([2, 5], tf.int32)
    assert trim_to_longest(full, "post").shape == (2, 5)


def test_identity_with_the_fixed_length_graph_on_a_test_slice(exports, reuters46):
    longest, fixed = exports
    texts = reuters46.test.texts()[:256]
    # sorted by length, as batch jobs score them, so most batches are cut well short of max_length
    texts = sorted(texts, key=len)
    new, old = longest.predict(texts, batch_size=32), fixed.predict(texts, batch_size=32)
    assert np.abs(new - old).max() <= 1e-5
    assert np.array_equal(new.argmax(axis=1), old.argmax(axis=1))


def test_short_and_long_text_together_score_as_each_alone(exports):
    longest, _ = exports
    short = "Wheat exports rose sharply today"  # 5 tokens
    assert len(short.split()) == 5
    rng = np.random.default_rng(5)
    words = ["oil", "prices", "grain", "bank", "rate", "tonnes", "shares", "said", "company", "profit"]
    long = " ".join(rng.choice(words, size=2000))
    together = longest.predict([short, long])
    alone = np.concatenate([longest.predict([short]), longest.predict([long])])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert together.shape == (2, 46)


def test_empty_texts_keep_the_signature(exports):
    longest, fixed = exports
    probs = longest.predict(["", "   "])
    assert probs.shape == (2, 46)
    np.testing.assert_allclose(probs, fixed.predict(["", "   "]), atol=1e-5)


def test_unmasked_models_keep_max_length_padding(reuters46, tmp_path):
    encoder, classifier = _trained(reuters46, "rnn", mask=False, padding="pre", truncating="pre",
                                   max_length=50)
    with pytest.raises(ValueError, match="without masking"):
        write_serving_model(tmp_path / "bad", encoder, classifier, pad_to="longest")
    write_serving_model(tmp_path / "default", encoder, classifier)
    write_serving_model(tmp_path / "fixed", encoder, classifier, pad_to=PAD_TO_MAX_LENGTH)
    texts = ["Wheat exports rose", "Crude oil prices rose sharply as OPEC cut output again"]
    np.testing.assert_allclose(ServingModel(tmp_path / "default").predict(texts),
                               ServingModel(tmp_path / "fixed").predict(texts), atol=1e-6)


@pytest.mark.parametrize("variant", ["gru", "bilstm"])
def test_cudnn_flavour_holds_cudnn_ops_and_default_holds_none(reuters46, tmp_path, variant):
    """Checks the traced graph only: running a cuDNN graph needs a GPU, which this machine lacks."""
    encoder, classifier = _trained(reuters46, variant)
    write_serving_model(tmp_path / "default", encoder, classifier)
    write_serving_model(tmp_path / "cudnn", encoder, classifier, kernels=CUDNN)
    assert not any("Cudnn" in op for op in graph_ops(tmp_path / "default"))
    assert "CudnnRNNV3" in graph_ops(tmp_path / "cudnn")
    assert _signatures(tmp_path / "cudnn") == {SIGNATURE_NAME}  # GPU only: nothing to compile on a CPU
    # the default graph traced after the cuDNN one is generic again, and still serves here
    write_serving_model(tmp_path / "after", encoder, classifier)
    assert not any("Cudnn" in op for op in graph_ops(tmp_path / "after"))
    assert ServingModel(tmp_path / "after").predict(["Wheat exports rose"]).shape == (1, 46)


def _signatures(path) -> set[str]:
    return set(tf.saved_model.load(str(path)).signatures)


def test_generic_masked_exports_carry_their_halves_and_pre_padding_compiles_alike(reuters46, tmp_path):
    from scoring.backends.xla import CompiledHalves

    encoder, classifier = _trained(reuters46, "gru", padding="pre", truncating="pre", max_length=50)
    write_serving_model(tmp_path / "longest", encoder, classifier)
    write_serving_model(tmp_path / "fixed", encoder, classifier, pad_to=PAD_TO_MAX_LENGTH)
    assert _signatures(tmp_path / "longest") == {SIGNATURE_NAME, ENCODE_SIGNATURE, IDS_SIGNATURE}
    assert _signatures(tmp_path / "fixed") == {SIGNATURE_NAME}
    loaded = tf.saved_model.load(str(tmp_path / "longest"))
    halves = CompiledHalves.of(loaded, 8, {"padding": "pre", "max_length": 50}, "gru")
    texts = tf.constant(["Wheat exports rose", "", "Crude oil prices rose sharply as OPEC cut output " * 20])
    expected = ServingModel(tmp_path / "fixed").predict(texts.numpy().tolist())
    try:
        np.testing.assert_allclose(halves.run(texts), expected, rtol=0, atol=1e-5)  # not compiled yet
        wait_for(lambda: len(halves.compiled_shapes()) == 8, timeout=120, what="the XLA compiles")
        np.testing.assert_allclose(halves.run(texts), expected, rtol=0, atol=1e-5)  # padded at the front
    finally:
        halves.close()


def test_cudnn_flavour_refuses_pre_padding(reuters46, tmp_path):
    encoder, classifier = _trained(reuters46, "gru", padding="pre", max_length=50)
    with pytest.raises(ValueError, match="padding='post'"):
        write_serving_model(tmp_path / "cudnn", encoder, classifier, kernels=CUDNN)


def _rows(x: np.ndarray) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in row[row != 0]) for row in x]


def test_length_batches_hold_every_text_once_cut_to_their_longest():
    rng = np.random.default_rng(0)
    n, width, batch = 700, 60, 16
    lengths = rng.integers(1, width + 1, size=n)
    x = np.zeros((n, width), np.int32)
    for i, k in enumerate(lengths):
        x[i, :k] = rng.integers(2, 500, size=k)
    y = np.arange(n)
    epochs = []
    dataset = length_batches(x, y, batch, "post", window_batches=4, seed=4)
    for _ in range(2):  # two epochs over one dataset, as Keras iterates it
        seen_x, seen_y, widths, spread = [], [], [], []
        for ids, labels in dataset:
            ids = ids.numpy()
            real = np.count_nonzero(ids, axis=1)
            assert ids.shape[1] == real.max()
            widths.append(ids.shape[1])
            spread.append(real.max() - real.min())
            seen_x += _rows(ids)
            seen_y += labels.numpy().tolist()
        assert sorted(seen_y) == list(range(n))
        assert seen_x == _rows(x[np.array(seen_y)])  # each label stays with its own text
        epochs.append(seen_y)
        # within a window texts are sorted: a batch spans far less than the full range of lengths
        assert np.mean(spread) < width / 4
        assert np.sum(widths) * batch < 0.75 * n * width
    assert epochs[0] != epochs[1]  # a new order every epoch
    again = [labels.numpy().tolist() for _, labels in length_batches(x, y, batch, "post", window_batches=4, seed=4)]
    assert sum(again, []) == epochs[0]  # reproducible from the seed
    window = batch * 4
    windows = [min(window, n - start) for start in range(0, n, window)]
    assert len(again) == sum(int(np.ceil(w / batch)) for w in windows)  # no batch spans two windows
    assert length_batches(x, y, batch, "post", window_batches=4, seed=4).cardinality().numpy() == len(again)


def test_side_rows_ride_with_their_texts_in_the_same_order():
    rng = np.random.default_rng(1)
    n, width = 200, 30
    x = np.zeros((n, width), np.int32)
    for i, k in enumerate(rng.integers(1, width + 1, size=n)):
        x[i, :k] = rng.integers(2, 500, size=k)
    y = np.arange(n)
    side = rng.normal(size=(n, 3)).astype(np.float32)
    plain = [labels.numpy().tolist() for _, labels in length_batches(x, y, 16, "post", window_batches=2, seed=3)]
    joined = list(length_batches(x, y, 16, "post", window_batches=2, seed=3, side=side))
    assert [labels.numpy().tolist() for _, labels in joined] == plain  # same order as without a side input
    for (ids, rows), labels in joined:
        assert ids.shape[1] == np.count_nonzero(ids.numpy(), axis=1).max()
        np.testing.assert_array_equal(rows.numpy(), side[labels.numpy()])
        assert _rows(ids.numpy()) == _rows(x[labels.numpy()])
    (_, val_rows), val_labels = next(iter(length_batches(x, y, 8, "post", shuffle=False, side=side)))
    np.testing.assert_array_equal(val_rows.numpy(), side[val_labels.numpy()])
    with pytest.raises(ValueError, match="side rows"):
        length_batches(x, y, 16, "post", side=side[:-1])


def test_validation_batches_are_sorted_and_complete():
    x = np.array([[3, 4, 5, 0], [6, 0, 0, 0], [7, 8, 0, 0]], np.int32)
    batches = list(length_batches(x, np.array([0, 1, 2]), 2, "post", shuffle=False))
    assert [b[1].numpy().tolist() for b in batches] == [[1, 2], [0]]
    assert [b[0].shape[1] for b in batches] == [2, 3]


def test_fit_arguments_bucket_only_masked_models():
    x, y = np.ones((10, 5), np.int32), np.zeros(10)
    masked = fit_arguments(preset("default"), (x, y), (x, y), seed=1)
    assert isinstance(masked["x"], tf.data.Dataset) and "batch_size" not in masked
    unmasked = fit_arguments(preset("seed"), (x, y), (x, y), seed=1)
    assert unmasked["x"] is x and unmasked["batch_size"] == 128
    off = fit_arguments(preset("default", length_buckets=False), (x, y), (x, y), seed=1)
    assert off["x"] is x
    side = np.zeros((10, 2), np.float32)
    beside = fit_arguments(preset("seed"), (x, y), (x, y), seed=1, sides=(side, side))
    assert beside["x"][1] is side and beside["validation_data"][0][1] is side


def test_cudnn_export_is_published_with_figures_from_the_generic_graph(reuters46, tmp_path):
    from training.export import export_model
    from training.layout import ModelRoot

    encoder, classifier = _trained(reuters46, "gru")
    root = ModelRoot(tmp_path / "models")
    validation = (reuters46.train.texts()[-200:], reuters46.train.y[-200:])
    meta = export_model(root, "gru", encoder, classifier, variant="gru", preset="test",
                        settings={"mask": True}, labels=reuters46.labels, validation=validation,
                        kernels=CUDNN)
    published = root.version_dir("gru", meta.version)
    assert "CudnnRNNV3" in graph_ops(published)
    assert [p.name for p in (tmp_path / "models" / "gru").iterdir() if p.name.startswith(".")] == []
    generic = tmp_path / "generic"
    write_serving_model(generic, encoder, classifier)
    probs = ServingModel(generic).predict(validation[0])
    assert meta.metrics["val_accuracy"] == pytest.approx(float(np.mean(probs.argmax(axis=1) == validation[1])))
