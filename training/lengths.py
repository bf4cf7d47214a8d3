"""Recurrent work in proportion to the texts' real lengths, not to ``max_length``.

The encoder pads or cuts every text to ``max_length`` tokens, and a recurrent layer runs every
step it is given.  With masking on, padding steps change nothing in the result, so a batch can
be cut to its longest text (serving) and training batches can be made of texts of similar
length (less padding to cut).  Without masking, padding is part of the input: nothing here
applies and batches keep ``max_length`` columns.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from training.presets import TrainSettings

VALIDATION_BATCH = 256


def trim_to_longest(ids: tf.Tensor, padding: str) -> tf.Tensor:
    """Token ids ``[batch, max_length]`` (0 = padding) cut to the batch's longest text.

    ``padding`` is the side the encoder padded ("post" or "pre"); the columns kept are the
    ones that hold tokens.  At least one column stays, so a batch of empty texts keeps its shape.
    """
    width = tf.shape(ids)[1]
    lengths = tf.math.count_nonzero(ids, axis=1, dtype=tf.int32)
    longest = tf.clip_by_value(tf.reduce_max(tf.concat([lengths, [1]], axis=0)), 1, width)
    if padding == "pre":
        return ids[:, width - longest:]
    return ids[:, :longest]


def length_batches(x: np.ndarray, y: np.ndarray, batch_size: int, padding: str, *, window_batches: int = 1,
                   seed: int | None = None, shuffle: bool = True, side: np.ndarray | None = None) -> tf.data.Dataset:
    """``(ids, label)`` batches of similar-length texts, each cut to its longest text.

    ``side`` holds one row per text that rides along with it uncut (another branch's input);
    the batches are then ``((ids, side), label)``.

    With ``shuffle``, texts are shuffled every epoch, sorted by length within windows of
    ``window_batches`` batches, and the batches shuffled again, so an epoch sees every text
    once in an order that changes from epoch to epoch (reproducibly from ``seed``).  Without it
    (validation), texts are sorted by length over the whole set.
    """
    if len(x) != len(y) or (side is not None and len(side) != len(x)):
        raise ValueError(f"{len(x)} texts but {len(y)} labels"
                         + ("" if side is None else f" and {len(side)} side rows"))
    lengths = np.count_nonzero(x, axis=1)
    features = (x,) if side is None else (x, side)
    dataset = tf.data.Dataset.from_tensor_slices((features, y, lengths))
    window = batch_size * window_batches
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(window).map(_sorted_by_length).unbatch()
        # no batch spans two windows, so the last one of each window may be short
        batches = sum(-(-min(window, len(x) - start) // batch_size) for start in range(0, len(x), window))
    else:
        order = np.argsort(lengths, kind="stable")
        dataset = tf.data.Dataset.from_tensor_slices((tuple(f[order] for f in features), y[order], lengths[order]))
        batches = -(-len(x) // batch_size)

    def trimmed(features, labels, _):
        ids = trim_to_longest(features[0], padding)
        return (ids if side is None else (ids, features[1])), labels

    dataset = dataset.batch(batch_size).map(trimmed)
    if shuffle:
        dataset = dataset.shuffle(batches, seed=seed, reshuffle_each_iteration=True)
    return dataset.apply(tf.data.experimental.assert_cardinality(batches)).prefetch(tf.data.AUTOTUNE)


def _sorted_by_length(features, labels, lengths):
    order = tf.argsort(lengths, stable=True)
    return tf.nest.map_structure(lambda t: tf.gather(t, order), (features, labels, lengths))


def fit_arguments(settings: TrainSettings, fit: tuple[np.ndarray, np.ndarray],
                  validation: tuple[np.ndarray, np.ndarray], seed: int,
                  sides: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """The data arguments of ``keras.Model.fit``: length-bucketed datasets when the settings
    ask for them and the model masks padding, else the padded arrays in shuffled batches.

    ``sides`` (fit rows, validation rows) is a second input beside the ids, as in
    :func:`length_batches`."""
    fit_side, val_side = sides or (None, None)
    if settings.length_buckets and settings.mask:
        return {"x": length_batches(*fit, settings.batch_size, settings.padding,
                                    window_batches=settings.length_bucket_window, seed=seed, side=fit_side),
                "validation_data": length_batches(*validation, VALIDATION_BATCH, settings.padding,
                                                  shuffle=False, side=val_side),
                "shuffle": False}  # the dataset shuffles itself, texts first, then batches
    if sides is None:
        return {"x": fit[0], "y": fit[1], "validation_data": validation,
                "batch_size": settings.batch_size, "shuffle": True}
    return {"x": (fit[0], fit_side), "y": fit[1], "validation_data": ((validation[0], val_side), validation[1]),
            "batch_size": settings.batch_size, "shuffle": True}
