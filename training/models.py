"""The text encoder and the four recurrent classifiers.

The encoder turns raw strings into fixed-length token ids with TensorFlow ops only, so the very
same function runs while training and inside the exported serving graph: what the service sends
is exactly what the model was trained on.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from training.layout import VARIANTS
from training.presets import TrainSettings


class TextEncoder:
    """Raw text -> int32 ids ``[batch, max_length]`` (0 padding, 1 out-of-vocabulary)."""

    def __init__(self, settings: TrainSettings):
        self.max_length = settings.max_length
        self.truncating = settings.truncating
        self.padding = settings.padding
        self.vectorizer = keras.layers.TextVectorization(
            max_tokens=settings.vocab_size, output_mode="int", name="vectorizer")

    def adapt(self, texts: list[str]) -> None:
        """Build the vocabulary from training texts only (never validation or test)."""
        self.vectorizer.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(512))

    def vocabulary_size(self) -> int:
        return self.vectorizer.vocabulary_size()

    def __call__(self, text: tf.Tensor) -> tf.Tensor:
        ids = tf.cast(self.vectorizer(text), tf.int32)
        ids = tf.reshape(ids, [tf.shape(text)[0], -1])
        lengths = tf.math.count_nonzero(ids, axis=1, dtype=tf.int32)
        n = self.max_length
        if self.truncating == "pre":
            # keep the last n real tokens: shift each row so its text ends at column n
            start = tf.maximum(lengths - n, 0)
            ids = _shift_left(ids, start, n)
        else:
            ids = ids[:, :n]
        ids = tf.pad(ids, [[0, 0], [0, tf.maximum(n - tf.shape(ids)[1], 0)]])
        lengths = tf.minimum(lengths, n)
        if self.padding == "pre":
            ids = tf.reverse(tf.reverse_sequence(ids, lengths, seq_axis=1, batch_axis=0), axis=[1])
        return tf.ensure_shape(ids, [None, n])

    def token_ids(self, texts: list[str], batch_size: int = 512) -> list[np.ndarray]:
        """Each text's ids in full, neither truncated nor padded (embedding pre-training)."""
        rows: list[np.ndarray] = []
        for i in range(0, len(texts), batch_size):
            ids = self.vectorizer(tf.constant(texts[i:i + batch_size])).numpy()
            rows += [row[row != 0] for row in ids]
        return rows

    def encode(self, texts: list[str], batch_size: int = 512) -> np.ndarray:
        """Encode a list of texts eagerly, in batches (training input)."""
        parts = [self(tf.constant(texts[i:i + batch_size])).numpy()
                 for i in range(0, len(texts), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.max_length), np.int32)


def _shift_left(ids: tf.Tensor, start: tf.Tensor, n: int) -> tf.Tensor:
    """Row i of the result is ``ids[i, start[i]:start[i] + n]`` (zero-padded past the end)."""
    width = tf.shape(ids)[1]
    cols = start[:, None] + tf.range(n)[None, :]
    padded = tf.pad(ids, [[0, 0], [0, n]])
    cols = tf.minimum(cols, width + n - 1)
    return tf.gather(padded, cols, axis=1, batch_dims=1)


class MaskedPooling(keras.layers.Layer):
    """Max, mean or both over the time steps the mask marks as real (zeros when none are)."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            mask = tf.ones(tf.shape(inputs)[:2], dtype=tf.bool)
        weights = tf.cast(mask, inputs.dtype)[:, :, None]
        pooled = []
        if self.mode in ("max", "meanmax"):
            lowest = tf.reduce_min(inputs) - 1.0
            maxed = tf.reduce_max(inputs * weights + lowest * (1.0 - weights), axis=1)
            pooled.append(tf.where(tf.reduce_any(mask, axis=1)[:, None], maxed, tf.zeros_like(maxed)))
        if self.mode in ("mean", "meanmax"):
            total = tf.reduce_sum(inputs * weights, axis=1)
            pooled.append(total / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0))
        return pooled[0] if len(pooled) == 1 else tf.concat(pooled, axis=-1)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def recurrent_layer(variant: str, units: int, return_sequences: bool, name: str | None = None) -> keras.layers.Layer:
    """The variant's recurrent layer, named after the variant unless ``name`` says otherwise."""
    name = name or variant
    if variant == "rnn":
        return keras.layers.SimpleRNN(units, return_sequences=return_sequences, name=name)
    if variant == "lstm":
        return keras.layers.LSTM(units, return_sequences=return_sequences, name=name)
    if variant == "gru":
        return keras.layers.GRU(units, return_sequences=return_sequences, name=name)
    if variant == "bilstm":
        return keras.layers.Bidirectional(
            keras.layers.LSTM(units, return_sequences=return_sequences), name=name)
    raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")


def build_classifier(variant: str, settings: TrainSettings, n_labels: int,
                     vocab_size: int | None = None, embeddings: np.ndarray | None = None) -> keras.Model:
    """Embedding -> recurrent layer (-> pooling over its outputs) -> dropout -> softmax.

    Takes token ids ``[batch, max_length]`` and returns probabilities ``[batch, n_labels]``.
    ``embeddings`` (``[vocab_size, embedding_dim]``) initialises the embedding, which stays
    trainable.
    """
    pooled = settings.pooling != "last"
    ids = keras.Input(shape=(settings.max_length,), dtype="int32", name="ids")
    init = "uniform" if embeddings is None else keras.initializers.Constant(embeddings)
    x = keras.layers.Embedding(vocab_size or settings.vocab_size, settings.embedding_dim,
                               mask_zero=settings.mask, embeddings_initializer=init,
                               name="embedding")(ids)
    if settings.embedding_dropout:
        x = keras.layers.SpatialDropout1D(settings.embedding_dropout, name="embedding_dropout")(x)
    x = recurrent_layer(variant, settings.units, return_sequences=pooled)(x)
    if pooled:
        x = MaskedPooling(settings.pooling, name=f"{settings.pooling}_pool")(x)
    if settings.dropout:
        x = keras.layers.Dropout(settings.dropout, name="dropout")(x)
    out = keras.layers.Dense(n_labels, activation="softmax", name="topics", dtype="float32")(x)
    return keras.Model(ids, out, name=variant)


def disable_cudnn(model: keras.Model) -> None:
    """Trace the generic recurrent kernels so one SavedModel serves on CPU and GPU alike."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if hasattr(layer, "use_cudnn"):
            layer.use_cudnn = False
