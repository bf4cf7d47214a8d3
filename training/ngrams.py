"""The n-gram branch: word 1-2-gram TF-IDF computed inside the graph, and a linear model on it.

A linear SVM on sublinear, L2-normalised TF-IDF of word 1-2-grams is the strongest quick model
on reuters46, and its mistakes differ from the recurrent models'.  By default it is an NB-SVM
(Wang & Manning, 2012): each topic's one-vs-rest SVM sees the features scaled by that topic's
naive-Bayes log-count ratio, which lifts rare topics (5-fold cross-validation over the training
split, docs/benchmarks.md); the ratio folds into the weights, so the served graph is the same
linear map either way.  Here the features are
TensorFlow ops (``TextVectorization`` counts, then log-scaled term frequency, IDF and L2 norm as
one layer), so the exported model takes raw text like every other model and the features the
SVM is fitted on are exactly those served.  The vocabulary and IDF come from the fit split only;
the SVM's scores become probabilities through a softmax whose temperature is fitted on
validation.

Public API
----------
``NGramClassifier``  raw text -> probabilities ``[batch, n_labels]`` (a Keras layer).
``fit_ngram_classifier(fit_texts, fit_y, n_labels, ...)``  vocabulary, IDF and SVM from the fit split.
``nb_svm(features, y, n_labels, c=..., seed=...)``  the NB-SVM's weights and biases on given features.
``train_ngram(data, settings, root, ...)``  fit, calibrate on validation and export.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from training.calibration import apply_temperature, expected_calibration_error, fit_temperature
from training.dataset import Reuters46
from training.export import export_savedmodel
from training.layout import (
    DEFAULT_SERVING_BASE,
    INPUT_KEY,
    NGRAM,
    OUTPUT_KEY,
    SIGNATURE_NAME,
    ExportMetadata,
    ModelRoot,
)
from training.presets import TrainSettings

NGRAMS = 2
# Another way to cut texts into terms: a batch of strings -> ragged ``[batch, None]`` terms (trials).
Split = Callable[[tf.Tensor], tf.RaggedTensor]
# NB-SVM's count smoothing (the paper's alpha).
NB_SMOOTHING = 1.0
# Classes absent from the fit split (tiny slices only) can never win.
_ABSENT_BIAS = -30.0
# SVM scores span about ±2, so the fitted temperature sits far below a network's.
_TEMPERATURE_BOUNDS = (0.01, 10.0)


class NGramClassifier(keras.layers.Layer):
    """Raw text -> softmax(linear(TF-IDF) / T).

    TF-IDF of a document: ``(1 + log count) * idf`` per known 1- or 2-gram, the row then
    L2-normalised; unknown n-grams count for nothing, so an empty or all-unknown text gets the
    bias alone, still a valid distribution.
    """

    def __init__(self, vocabulary: list[str], idf: np.ndarray, weights: np.ndarray, bias: np.ndarray,
                 temperature: float = 1.0, split: Split | None = None, **kwargs):
        super().__init__(**kwargs)
        self.vectorizer = _vectorizer(vocabulary, split, name="ngram_counts")
        n_terms = len(vocabulary) + 1  # index 0 is the out-of-vocabulary bucket
        self.idf = self.add_weight(shape=(n_terms,), initializer="zeros", trainable=False, name="idf")
        self.kernel = self.add_weight(shape=(n_terms, weights.shape[1]), initializer="zeros",
                                      trainable=False, name="kernel")
        self.bias = self.add_weight(shape=(weights.shape[1],), initializer="zeros", trainable=False,
                                    name="bias")
        self.idf.assign(np.r_[0.0, idf].astype(np.float32))
        self.kernel.assign(np.vstack([np.zeros((1, weights.shape[1])), weights]).astype(np.float32))
        self.bias.assign(bias.astype(np.float32))
        self.temperature = float(temperature)

    def build(self, input_shape):
        """Every weight is made and set in ``__init__``; only the vectorizer is left to build."""
        self.vectorizer.build(input_shape)

    def features(self, text: tf.Tensor) -> tf.SparseTensor:
        """L2-normalised sublinear TF-IDF, sparse ``[batch, n_terms]``."""
        counts = self.vectorizer(tf.reshape(text, [-1]))
        counts = tf.sparse.SparseTensor(counts.indices, tf.cast(counts.values, tf.float32),
                                        counts.dense_shape)
        columns = counts.indices[:, 1]
        values = (1.0 + tf.math.log(tf.maximum(counts.values, 1.0))) * tf.gather(self.idf, columns)
        rows = counts.indices[:, 0]
        norms = tf.math.unsorted_segment_sum(tf.square(values), rows,
                                             tf.cast(counts.dense_shape[0], tf.int64))
        values = values / tf.gather(tf.sqrt(tf.maximum(norms, 1e-12)), rows)
        return tf.sparse.SparseTensor(counts.indices, values, counts.dense_shape)

    def scores(self, text: tf.Tensor) -> tf.Tensor:
        """The linear model's raw scores ``[batch, n_labels]``."""
        return tf.sparse.sparse_dense_matmul(self.features(text), self.kernel) + self.bias

    def call(self, text):
        return tf.nn.softmax(self.scores(text) / self.temperature, axis=-1)


def _vectorizer(vocabulary: list[str] | None = None, split: Split | None = None,
                **kwargs) -> keras.layers.TextVectorization:
    """Term counts: of word 1-2-grams, or of the terms ``split`` makes of each text."""
    if split is None:
        return keras.layers.TextVectorization(output_mode="count", ngrams=NGRAMS, sparse=True,
                                              vocabulary=vocabulary, **kwargs)
    return keras.layers.TextVectorization(standardize=None, split=split, output_mode="count", sparse=True,
                                          vocabulary=vocabulary, **kwargs)


def _sparse_rows(layer, texts: list[str], batch_size: int = 512):
    """``layer(texts)`` as one scipy CSR matrix (float32)."""
    from scipy import sparse
    parts = []
    for start in range(0, len(texts), batch_size):
        out = layer(tf.constant(texts[start:start + batch_size]))
        idx = out.indices.numpy()
        parts.append(sparse.csr_matrix((out.values.numpy().astype(np.float32), (idx[:, 0], idx[:, 1])),
                                       shape=tuple(out.dense_shape.numpy())))
    return sparse.vstack(parts).tocsr()


def fit_vocabulary(texts: list[str], min_df: int, split: Split | None = None) -> tuple[list[str], np.ndarray]:
    """1-2-grams (or the terms ``split`` makes) in at least ``min_df`` of ``texts``, most frequent
    first, and their smoothed IDF.

    IDF is ``ln((1 + n) / (1 + df)) + 1``, the usual smoothed form.
    """
    counter = _vectorizer(split=split)
    counter.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(512))
    terms = counter.get_vocabulary()[1:]
    counts = _sparse_rows(counter, texts)
    df = np.asarray((counts[:, 1:] > 0).sum(axis=0)).ravel()
    keep = np.flatnonzero(df >= min_df)
    keep = keep[np.argsort(-df[keep], kind="stable")]
    idf = np.log((1.0 + len(texts)) / (1.0 + df[keep])) + 1.0
    return [terms[i] for i in keep], idf


def _svm(features, y: np.ndarray, n_labels: int, *, c: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(weights ``[terms, n_labels]``, biases) of scikit-learn's one-vs-rest LinearSVC."""
    from sklearn.svm import LinearSVC

    svm = LinearSVC(C=c, random_state=seed).fit(features, y)
    weights = np.zeros((features.shape[1], n_labels), np.float32)
    bias = np.full(n_labels, _ABSENT_BIAS, np.float32)
    classes = svm.classes_
    if len(classes) == 2:  # sklearn keeps one score for two classes: +score for the second
        weights[:, classes[1]], weights[:, classes[0]] = svm.coef_[0], -svm.coef_[0]
        bias[classes[1]], bias[classes[0]] = svm.intercept_[0], -svm.intercept_[0]
    else:
        weights[:, classes] = svm.coef_.T
        bias[classes] = svm.intercept_
    return weights, bias


def nb_svm(features, y: np.ndarray, n_labels: int, *, c: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(weights ``[terms, n_labels]``, biases) of NB-SVM on ``features`` (scipy CSR, one row per text).

    Topic k's SVM is fitted on the features times ``r_k = log((p_k / |p_k|) / (q_k / |q_k|))``,
    p_k and q_k counting the documents of k and of every other topic that hold each term (plus
    one); its scores on scaled features equal the unscaled features times ``coef * r_k``, which
    is what is returned.  A topic absent from ``y`` can never win.
    """
    from sklearn.svm import LinearSVC

    weights = np.zeros((features.shape[1], n_labels), np.float32)
    bias = np.full(n_labels, _ABSENT_BIAS, np.float32)
    present = (features > 0).astype(np.float64)  # the ratio counts documents, as in the paper
    for label in np.unique(y):
        mine = y == label
        if mine.all():  # a single topic (tiny slices only) always wins
            bias[label] = 0.0
            continue
        p = np.asarray(present[mine].sum(axis=0)).ravel() + NB_SMOOTHING
        q = np.asarray(present[~mine].sum(axis=0)).ravel() + NB_SMOOTHING
        ratio = np.log((p / p.sum()) / (q / q.sum()))
        svm = LinearSVC(C=c, random_state=seed).fit(features.multiply(ratio).tocsr(), mine)
        weights[:, label], bias[label] = svm.coef_[0] * ratio, svm.intercept_[0]
    return weights, bias


LEARNERS = {"svm": _svm, "nb-svm": nb_svm}


def fit_ngram_classifier(texts: list[str], y: np.ndarray, n_labels: int, *, min_df: int = 2,
                         c: float = 1.0, seed: int = 1, learner: str = "nb-svm") -> NGramClassifier:
    """Vocabulary, IDF and a one-vs-rest linear model (``LEARNERS``), all from ``texts`` (the fit split)."""
    vocabulary, idf = fit_vocabulary(texts, min_df)
    untrained = NGramClassifier(vocabulary, idf, np.zeros((len(vocabulary), n_labels)), np.zeros(n_labels))
    features = _sparse_rows(untrained.features, texts)[:, 1:]
    weights, bias = LEARNERS[learner](features, y, n_labels, c=c, seed=seed)
    classifier = NGramClassifier(vocabulary, idf, weights, bias)
    classifier.build((None,))  # its weights are all set: ready to export without a first call
    return classifier


def write_ngram_model(path, classifier: NGramClassifier) -> None:
    """SavedModel at ``path``: ``serving_default(text: string[None]) -> {probabilities}``."""
    archive = keras.export.ExportArchive()
    archive.track(classifier)

    def serve(text):
        return {OUTPUT_KEY: classifier(text)}

    archive.add_endpoint(name=SIGNATURE_NAME, fn=serve,
                         input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name=INPUT_KEY)])
    archive.write_out(str(path), verbose=False)


def train_ngram(data: Reuters46, settings: TrainSettings, root: ModelRoot, *, name: str = NGRAM,
                preset: str = "custom", seed: int = 1,
                serving_base: str = DEFAULT_SERVING_BASE) -> ExportMetadata:
    """Fit the n-gram model on the fit split, calibrate it on validation and export it.

    With ``settings.refit`` it is then fitted again on the fit and validation splits together,
    keeping the temperature and the first model's validation probabilities.

    The same ``seed`` gives the same validation split as :func:`training.train.train_variant`,
    so the two can be combined on validation data neither was fitted on.
    """
    fit, val = data.validation_split(settings.val_fraction, seed)
    fit = fit.head(settings.train_limit)
    test = data.test.head(settings.test_limit)
    fit_texts, val_texts = fit.texts(settings.text), val.texts(settings.text)
    started = time.perf_counter()
    classifier = fit_ngram_classifier(fit_texts, fit.y, len(data.labels), min_df=settings.ngram_min_df,
                                      c=settings.ngram_c, seed=seed, learner=settings.ngram_learner)
    fit_seconds = time.perf_counter() - started
    val_probs = classifier(tf.constant(val_texts)).numpy()
    if settings.calibrate:
        classifier.temperature = fit_temperature(val_probs, val.y, bounds=_TEMPERATURE_BOUNDS)
    judged = None
    if settings.refit:  # the settings and temperature stay; the vocabulary and SVM see validation too
        temperature = classifier.temperature
        judged = apply_temperature(val_probs, temperature)
        classifier = fit_ngram_classifier(fit_texts + val_texts, np.r_[fit.y, val.y], len(data.labels),
                                          min_df=settings.ngram_min_df, c=settings.ngram_c, seed=seed,
                                          learner=settings.ngram_learner)
        classifier.temperature = temperature
    metadata = ExportMetadata(
        model=name, version=0, variant=NGRAM, preset=preset,
        settings={**settings.model_dump(), "seed": seed}, labels=list(data.labels),
        temperature=classifier.temperature,
        metrics={"train_seconds": fit_seconds, "n_terms": float(classifier.idf.shape[0] - 1),
                 "val_ece_uncalibrated": expected_calibration_error(val_probs, val.y),
                 "val_ece_calibrated": expected_calibration_error(
                     apply_temperature(val_probs, classifier.temperature), val.y)})
    return export_savedmodel(root, name, lambda path: write_ngram_model(path, classifier), metadata,
                             validation=(val_texts, val.y), test=(test.texts(settings.text), test.y),
                             serving_base=serving_base, val_probs=judged)
