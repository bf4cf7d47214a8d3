"""Small calls through the XLA-compiled half of a recurrent export: same answers, padded shapes,
the switch, and exports without the halves."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.backends.embedded import EmbeddedBackend
from scoring.backends.xla import LENGTH_STEP, CompiledHalves, all_shapes, padded_shape
from scoring.settings import BackendSettings
from tests.support.processes import wait_for
from training.layout import ENCODE_SIGNATURE, IDS_SIGNATURE, INPUT_KEY, OUTPUT_KEY, SIGNATURE_NAME, ModelRoot

LONG = " ".join(["oil", "prices", "rose", "after", "opec", "cut", "output"] * 300)  # ~2,100 tokens


def test_padded_shapes_are_few_and_never_cut():
    assert padded_shape(1, 1, 300) == (1, LENGTH_STEP)
    assert padded_shape(5, 33, 300) == (8, 64)
    assert padded_shape(32, 64, 300) == (32, 64)
    assert padded_shape(3, 290, 300) == (4, 300)  # capped at max_length, not 320
    assert padded_shape(2, 40, 40) == (2, 40)
    shapes = all_shapes(32, 300)
    assert len(shapes) == 6 * 10 and shapes[0] == (1, 32)  # rows in powers of two, columns 32..288 and 300
    assert all_shapes(32, 40) == [(rows, columns) for rows in (1, 2, 4, 8, 16, 32) for columns in (32, 40)]


@pytest.fixture(scope="module")
def loaded_gru(tiny_model_root):
    import tensorflow as tf

    root = ModelRoot(tiny_model_root)
    return tf.saved_model.load(str(root.version_dir("gru", 1))), root.read_metadata("gru", 1)


def _texts(reuters46, n):
    return [LONG, "wheat up", ""] + reuters46.test.texts()[:max(0, n - 3)]


@pytest.mark.parametrize("n", [1, 5, 32])
def test_compiled_half_answers_as_the_serving_signature(loaded_gru, reuters46, n):
    import tensorflow as tf

    loaded, meta = loaded_gru
    assert {ENCODE_SIGNATURE, IDS_SIGNATURE} <= set(loaded.signatures)
    halves = CompiledHalves.of(loaded, 32, meta.settings, "gru")
    texts = tf.constant(_texts(reuters46, n)[:n])
    expected = loaded.signatures[SIGNATURE_NAME](**{INPUT_KEY: texts})[OUTPUT_KEY].numpy()
    try:
        first = halves.run(texts)  # nothing compiled yet: uncompiled now, every shape compiled on the side
        wait_for(lambda: len(halves.compiled_shapes()) == len(all_shapes(32, 40)), timeout=120,
                 what="the XLA compiles")
        compiled = halves.run(texts)
    finally:
        halves.close()
    for answer in (first, compiled):
        assert answer is not None and answer.shape == expected.shape
        np.testing.assert_allclose(answer, expected, rtol=0, atol=1e-5)
        assert (answer.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_large_calls_and_the_switch_keep_the_plain_graph(loaded_gru, reuters46):
    import tensorflow as tf

    loaded, meta = loaded_gru
    halves = CompiledHalves.of(loaded, 4, meta.settings, "gru")
    assert halves.run(tf.constant(reuters46.test.texts()[:5])) is None
    assert halves.run(tf.constant([], dtype=tf.string)) is None
    assert halves._compiler is None  # large calls alone never start the compiler (a batch worker)
    assert CompiledHalves.of(loaded, 0, meta.settings, "gru") is None


def test_exports_without_halves_have_no_compiled_runner(tiny_model_root):
    import tensorflow as tf

    root = ModelRoot(tiny_model_root)
    for model in ("ensemble",):  # pooled models take raw text in every member
        loaded = tf.saved_model.load(str(root.version_dir(model, 1)))
        assert CompiledHalves.of(loaded, 32, root.read_metadata(model, 1).settings, model) is None


def test_backend_with_and_without_xla_give_the_same_answers(tiny_model_root, reuters46):
    texts = _texts(reuters46, 40)
    on = EmbeddedBackend(BackendSettings(model_root=tiny_model_root, xla_max_batch=16), poll=False)
    off = EmbeddedBackend(BackendSettings(model_root=tiny_model_root, xla_max_batch=0), poll=False)
    try:
        for _ in range(2):  # shapes seen the first time are compiled on the side for the second
            for n in (1, 2, 7, 16, 17, 40):  # 17 and 40 go past xla_max_batch: the plain graph
                for model in ("rnn", "gru"):
                    a = on.classify(texts[:n], model).probabilities
                    b = off.classify(texts[:n], model).probabilities
                    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
                    assert (a.argmax(axis=1) == b.argmax(axis=1)).all()
            halves = on._served["gru"][1]._compiled
            wait_for(lambda h=halves: len(h.compiled_shapes()) == len(all_shapes(16, 40)), timeout=120,
                     what="the XLA compiles")
        # a 5-token text beside a 2,000-token one: as if each were scored alone
        pair = on.classify(["wheat exports rose sharply today", LONG], "gru").probabilities
        alone = [on.classify([t], "gru").probabilities[0] for t in ("wheat exports rose sharply today", LONG)]
        np.testing.assert_allclose(pair, np.stack(alone), rtol=0, atol=1e-5)
    finally:
        on.close()
        off.close()


def test_a_backend_with_only_large_calls_never_compiles(tiny_model_root, reuters46):
    """A batch worker: models warmed up at load, then calls of more texts than xla_max_batch."""
    backend = EmbeddedBackend(BackendSettings(model_root=tiny_model_root, xla_max_batch=4), poll=False)
    try:
        backend.refresh()
        assert backend.classify(reuters46.test.texts()[:40], "gru").probabilities.shape == (40, 46)
        halves = backend._served["gru"][1]._compiled
        assert halves is not None and halves._compiler is None
    finally:
        backend.close()
