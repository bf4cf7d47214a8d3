"""Training one variant end to end: reuters46 -> fitted classifier -> exported version.

Public API
----------
``train_variant(data, variant, settings, root, ...) -> TrainResult``
    Carves validation out of the training split, builds the vocabulary on the rest,
    pre-trains word embeddings on that text and the corpus's unlabelled stories, trains with
    early stopping on validation loss (best weights restored), fits a temperature on
    validation, and exports through :func:`training.export.export_model`.
``export_combinations(data, root, variants, settings, seed=...) -> list[ExportMetadata]``
    Exports each variant's hybrid with the n-gram model (``<variant>-ngram``) and, for more
    than one variant, the ensemble of all of them, the n-gram model and (unless
    ``sentence_pieces`` is 0) the sentence member, with weights chosen on the validation split
    of the same seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from training.calibration import apply_temperature, expected_calibration_error, fit_temperature
from training.corpus import Document
from training.dataset import Reuters46, Split, texts_of
from training.embeddings import pretrain
from training.export import export_ensemble, export_model
from training.layout import DEFAULT_SERVING_BASE, ENSEMBLE, GENERIC, NGRAM, SENTENCE, ExportMetadata, ModelRoot
from training.lengths import fit_arguments
from training.models import TextEncoder, build_classifier
from training.presets import TrainSettings
from training.pretrain import load_into, pretrain_encoder, unfreezing_stages

HYBRID = "hybrid"


@dataclass
class TrainResult:
    metadata: ExportMetadata
    history: dict[str, list[float]]
    epoch_seconds: list[float] = field(default_factory=list)
    # the trained model itself, to export it again in another form (benchmarks)
    encoder: TextEncoder | None = None
    classifier: keras.Model | None = None

    @property
    def seconds_per_epoch(self) -> float:
        return float(np.mean(self.epoch_seconds)) if self.epoch_seconds else 0.0


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def class_weights(y: np.ndarray, n_labels: int, mode: str) -> dict[int, float] | None:
    """Per-class loss weights: none, inverse frequency (balanced) or its square root."""
    if mode == "none":
        return None
    counts = np.bincount(y, minlength=n_labels).astype(float)
    weights = np.where(counts > 0, len(y) / (n_labels * np.maximum(counts, 1)), 0.0)
    if mode == "sqrt":
        weights = np.sqrt(weights)
    weights /= np.average(weights[y])
    return {i: float(w) for i, w in enumerate(weights)}


def pretraining_documents(data: Reuters46, fit: Split, limit: int | None = None) -> tuple[Document, ...]:
    """What pre-training may read: the fit split and the unlabelled stories (the first ``limit``),
    never test, nor validation unless ``fit`` holds it (a refit)."""
    return fit.documents + data.unlabelled[:limit]


def _optimizer(settings: TrainSettings, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate = settings.learning_rate
    if settings.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            settings.learning_rate, decay_steps=max(1, steps_per_epoch * settings.epochs), alpha=0.05)
    averaging = {"use_ema": True, "ema_momentum": settings.ema_momentum} if settings.ema_momentum else {}
    return keras.optimizers.Adam(learning_rate=rate, clipnorm=1.0, **averaging)


def train_variant(data: Reuters46, variant: str, settings: TrainSettings, root: ModelRoot, *,
                  name: str | None = None, preset: str = "custom", seed: int = 1,
                  log_dir: Path | None = None, verbose: int = 0, cache_dir: Path | None = None,
                  serving_base: str = DEFAULT_SERVING_BASE, kernels: str = GENERIC) -> TrainResult:
    """Train ``variant`` on ``data`` with ``settings`` and export it into ``root``.

    ``name`` is the model name in the root (the variant by default); ``log_dir`` receives
    TensorBoard logs under ``<log_dir>/<name>``; ``verbose`` is Keras' progress level;
    ``cache_dir`` keeps pre-trained weights between runs; ``kernels`` is the export's
    recurrent kernels (:func:`training.export.export_model`).
    The same ``seed`` gives the same split, initial weights and batch order (``settings.init_seed``,
    when set, takes over the last two).  With ``settings.refit`` the model chosen on validation
    is trained again on the fit and validation splits together, for the epochs validation chose
    and with its temperature, and that second model is exported with the first model's
    validation probabilities (its validation figures, threshold and ensemble weights).
    """
    name = name or variant
    fit, val = data.validation_split(settings.val_fraction, seed)
    fit = fit.head(settings.train_limit)
    test = data.test.head(settings.test_limit)
    run = _fit_classifier(data, variant, settings, fit, val, seed, log_dir and Path(log_dir) / name, verbose,
                          cache_dir)
    val_texts = val.texts(settings.text)
    val_probs = run.classifier.predict(run.x_val, batch_size=256, verbose=0)
    temperature = fit_temperature(val_probs, val.y) if settings.calibrate else 1.0
    extra = {
        "epochs_run": float(len(run.epoch_seconds)),
        "seconds_per_epoch": float(np.mean(run.epoch_seconds)) if run.epoch_seconds else 0.0,
        # the first epoch also traces the training step; the later ones are the steady cost
        "steady_seconds_per_epoch": float(np.mean(run.epoch_seconds[1:] or run.epoch_seconds or [0.0])),
        "train_seconds": float(np.sum(run.epoch_seconds)),
        "pretrain_seconds": run.pretrain_seconds,
        "val_ece_uncalibrated": expected_calibration_error(val_probs, val.y),
        "val_ece_calibrated": expected_calibration_error(apply_temperature(val_probs, temperature), val.y),
    }
    final, judged = run, None
    if settings.refit:
        judged = apply_temperature(val_probs, temperature)
        # early stopping restored the epoch of least validation loss; train that long again
        epochs = int(np.argmin(run.history["val_loss"])) + 1
        both = Split(fit.documents + val.documents, np.r_[fit.y, val.y])
        final = _fit_classifier(data, variant, settings, both, val, seed, None, verbose, cache_dir, stop_at=epochs)
        extra |= {"refit_epochs": float(epochs), "refit_seconds": float(np.sum(final.epoch_seconds))}
    # the history and timings are the run validation judged; a refit adds its own in ``extra``
    metadata = export_model(
        root, name, final.encoder, final.classifier, variant=variant, preset=preset,
        settings={**settings.model_dump(), "seed": seed}, labels=data.labels,
        validation=(val_texts, val.y), test=(test.texts(settings.text), test.y),
        temperature=temperature, history=run.history, extra_metrics=extra, kernels=kernels,
        serving_base=serving_base, val_probs=judged)
    return TrainResult(metadata, run.history, run.epoch_seconds, final.encoder, final.classifier)


@dataclass
class _Run:
    encoder: TextEncoder
    classifier: keras.Model
    x_val: np.ndarray  # validation ids under this run's vocabulary
    history: dict[str, list[float]]
    epoch_seconds: list[float]
    pretrain_seconds: float


def _fit_classifier(data: Reuters46, variant: str, settings: TrainSettings, fit: Split, val: Split, seed: int,
                    log_dir: Path | None, verbose: int, cache_dir: Path | None,
                    stop_at: int | None = None) -> _Run:
    """Vocabulary and pre-training from ``fit`` (and the unlabelled stories), then training.

    Without ``stop_at``, early stopping on ``val`` restores the best epoch; with it, training
    runs exactly ``stop_at`` epochs of the same schedule (``val`` is then only reported).
    """
    keras.utils.set_random_seed(seed)
    fit_texts = fit.texts(settings.text)
    encoder = TextEncoder(settings)
    encoder.adapt(fit_texts)
    x_fit, x_val = encoder.encode(fit_texts), encoder.encode(val.texts(settings.text))
    n_labels = len(data.labels)
    started = time.monotonic()
    embeddings = None
    corpus_texts = texts_of(pretraining_documents(data, fit, settings.train_limit), settings.text)
    if settings.embedding_init == "word2vec":
        embeddings = pretrain(encoder, corpus_texts, settings.embedding_dim, settings.word2vec_epochs, seed,
                              cache_dir)
    encoder_weights = None
    if settings.lm_epochs:
        encoder_weights = pretrain_encoder(encoder, corpus_texts, variant, settings, seed, embeddings, cache_dir)
    pretrain_seconds = time.monotonic() - started
    start_seed = seed if settings.init_seed is None else settings.init_seed
    if settings.init_seed is not None:
        keras.utils.set_random_seed(start_seed)
    classifier = build_classifier(variant, settings, n_labels, encoder.vocabulary_size(), embeddings)
    if encoder_weights is not None:
        load_into(classifier, variant, encoder_weights)
    steps = int(np.ceil(len(x_fit) / settings.batch_size))
    timer = _EpochTimer()
    callbacks: list[keras.callbacks.Callback] = [
        timer,
        # the average goes into the model before each validation and stays there through
        # the epoch's end, so early stopping keeps and restores the average's best epoch
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if settings.ema_momentum else []),
    ]
    if log_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(str(log_dir), write_graph=False))
    data_arguments = fit_arguments(settings, (x_fit, fit.y), (x_val, val.y), start_seed)
    history: dict[str, list[float]] = {}
    started_at = 0
    for frozen, end in unfreezing_stages(variant, settings):
        if stop_at is not None and started_at >= stop_at:
            break
        for layer in classifier.layers:
            layer.trainable = layer.name not in frozen
        # each stage starts a fresh optimizer (and learning-rate schedule) on the layers it trains
        classifier.compile(optimizer=_optimizer(settings, steps),
                           loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        # early stopping watches the last stage only, the one that ends the schedule
        stopping = [] if end < settings.epochs or stop_at is not None else [keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=settings.patience, restore_best_weights=True)]
        end = end if stop_at is None else min(end, stop_at)
        fitted = classifier.fit(**data_arguments, initial_epoch=started_at, epochs=end, verbose=verbose,
                                callbacks=[*callbacks, *stopping],
                                class_weight=class_weights(fit.y, n_labels, settings.class_weight))
        for k, values in fitted.history.items():
            history.setdefault(k, []).extend(float(v) for v in values)
        started_at = end
    return _Run(encoder, classifier, x_val, history, timer.seconds, pretrain_seconds)


def hybrid_name(variant: str) -> str:
    """The model name of ``variant`` combined with the n-gram model, e.g. ``bilstm-ngram``."""
    return f"{variant}-{NGRAM}"


def ensemble_members(variants: list[str], settings: TrainSettings) -> list[str]:
    """What the ensemble pools: ``variants``, the n-gram model and the sentence member (if any)."""
    return [*variants, NGRAM, *([SENTENCE] if settings.sentence_pieces else [])]


def export_combinations(data: Reuters46, root: ModelRoot, variants: list[str], settings: TrainSettings, *,
                        seed: int = 1, serving_base: str = DEFAULT_SERVING_BASE) -> list[ExportMetadata]:
    """Hybrids of each of ``variants`` with the n-gram model, then their ensemble (with the
    sentence member too unless ``settings.sentence_pieces`` is 0).

    Every member must be exported in ``root`` from the same ``seed``, so the validation split
    the weights are chosen on is one none of them was fitted on.
    """
    _, val = data.validation_split(settings.val_fraction, seed)
    test = data.test.head(settings.test_limit)
    common = dict(labels=data.labels, validation=(val.texts(settings.text), val.y),
                  test=(test.texts(settings.text), test.y), weighted=True,
                  target_precision=settings.target_precision, serving_base=serving_base)
    exported = [export_ensemble(root, [variant, NGRAM], name=hybrid_name(variant), variant=HYBRID, **common)
                for variant in variants]
    if len(variants) > 1:
        exported.append(export_ensemble(root, ensemble_members(variants, settings), name=ENSEMBLE, **common))
    return exported
