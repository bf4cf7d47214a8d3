"""Export: trained models -> versioned SavedModels that TF Serving and the gateway load.

Public API
----------
``export_model(root, name, encoder, classifier, ...)``
    One recurrent classifier with its text encoder (tokenisation inside the graph) and its
    temperature baked in.
``export_ensemble(root, members, ...)``
    A model averaging the probabilities of exported members (same signature).

Both write into ``ModelRoot.staging_dir``, score the staged SavedModel through its serving
signature on the validation split (abstain threshold) and, when given, the test split
(metrics), add labels, metadata, training history, TF Serving warmup requests and the
validation probabilities under ``assets.extra/``, publish the folder atomically as the next
version and rewrite ``models.config``.  A refitted model has seen validation: its validation
figures, threshold and kept probabilities are those of the model validation chose, passed in
as ``val_probs``, and an ensemble pools its members' kept probabilities, so its weights are
fitted on text none of the members it weighs was fitted on.  Exports are traced with cuDNN
kernels disabled so the same SavedModel serves on CPU and GPU; ``kernels="cudnn"`` traces the
cuDNN kernels instead, for GPU-only serving.  A masked model's graph cuts each batch to its
longest text (capped at ``max_length``), so its recurrent layer runs as many steps as the
batch needs, with the same probabilities.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training.calibration import apply_temperature, choose_threshold, expected_calibration_error, fit_temperature
from training.ensemble import MEAN, PRODUCT, choose_weights, pool
from training.evaluate import HISTORY_FILE, ServingModel, classification_metrics
from training.layout import (
    CUDNN,
    DEFAULT_SERVING_BASE,
    ENCODE_SIGNATURE,
    ENSEMBLE,
    EXTRA_DIR,
    GENERIC,
    IDS_KEY,
    IDS_SIGNATURE,
    INPUT_KEY,
    LABELS_FILE,
    METADATA_FILE,
    OUTPUT_KEY,
    SIGNATURE_NAME,
    VALIDATION_PROBS_FILE,
    WARMUP_FILE,
    ExportMetadata,
    LayoutError,
    ModelRoot,
)
from training.lengths import trim_to_longest
from training.models import TextEncoder, disable_cudnn
from training.savedmodel import load as load_savedmodel

WARMUP_SAMPLES = 4
_TEXT_SPEC = tf.TensorSpec(shape=[None], dtype=tf.string, name=INPUT_KEY)
# How the serving graph pads a batch: to its longest text, or every text to max_length.
PAD_TO_LONGEST, PAD_TO_MAX_LENGTH = "longest", "max_length"


def _scale(probs: tf.Tensor, temperature: float) -> tf.Tensor:
    probs = tf.cast(probs, tf.float32)
    if temperature == 1.0:
        return probs
    return tf.nn.softmax(tf.math.log(tf.maximum(probs, 1e-12)) / temperature, axis=-1)


def write_serving_model(path: Path, encoder: TextEncoder, classifier: keras.Model,
                        temperature: float = 1.0, *, pad_to: str | None = None,
                        kernels: str = GENERIC) -> None:
    """SavedModel at ``path``: ``serving_default(text: string[None]) -> {probabilities}``.

    ``pad_to``: ``"longest"`` cuts each batch to its longest text, ``"max_length"`` pads every
    text to ``max_length``; by default the former when the model masks padding (padding then
    changes nothing) and the latter when it does not.  ``kernels="cudnn"`` traces cuDNN
    kernels: the graph then runs on a GPU only, and a text without any token is read as one
    unknown word (cuDNN cannot run a fully masked row).
    """
    masked = _masks_padding(classifier)
    pad_to = pad_to or (PAD_TO_LONGEST if masked else PAD_TO_MAX_LENGTH)
    if pad_to not in (PAD_TO_LONGEST, PAD_TO_MAX_LENGTH):
        raise ValueError(f"pad_to must be {PAD_TO_LONGEST!r} or {PAD_TO_MAX_LENGTH!r}, not {pad_to!r}")
    if pad_to == PAD_TO_LONGEST and not masked:
        raise ValueError("padding to the longest text changes the answers of a model without masking")
    if kernels not in (GENERIC, CUDNN):
        raise ValueError(f"kernels must be {GENERIC!r} or {CUDNN!r}, not {kernels!r}")
    if kernels == CUDNN and masked and encoder.padding != "post":
        raise ValueError("cuDNN kernels need texts padded at the end (padding='post')")
    archive = keras.export.ExportArchive()
    archive.track(encoder.vectorizer)
    archive.track(classifier)

    def encode(text):
        ids = encoder(text)
        return trim_to_longest(ids, encoder.padding) if pad_to == PAD_TO_LONGEST else ids

    def classify_ids(ids):
        if kernels == CUDNN:
            empty = tf.equal(tf.reduce_max(ids, axis=1, keepdims=True), 0)
            first = tf.equal(tf.range(tf.shape(ids)[1]), 0)[None, :]
            ids = tf.where(empty & first, tf.ones_like(ids), ids)
        return _scale(classifier(ids, training=False), temperature)

    def serve(text):
        return {OUTPUT_KEY: classify_ids(encode(text))}

    with _traced_kernels(classifier, kernels):
        archive.add_endpoint(name=SIGNATURE_NAME, fn=serve, input_signature=[_TEXT_SPEC])
        if pad_to == PAD_TO_LONGEST and kernels == GENERIC:  # halves for in-process XLA (scoring.backends)
            archive.add_endpoint(name=ENCODE_SIGNATURE, fn=lambda text: {IDS_KEY: encode(text)},
                                 input_signature=[_TEXT_SPEC])
            archive.add_endpoint(name=IDS_SIGNATURE, fn=lambda ids: {OUTPUT_KEY: classify_ids(ids)},
                                 input_signature=[tf.TensorSpec(shape=[None, None], dtype=tf.int32, name=IDS_KEY)])
        archive.write_out(str(path), verbose=False)


def _masks_padding(classifier: keras.Model) -> bool:
    return any(getattr(layer, "mask_zero", False)
               for layer in classifier._flatten_layers(include_self=False, recursive=True))


@contextlib.contextmanager
def _traced_kernels(classifier: keras.Model, kernels: str) -> Iterator[None]:
    """Trace generic kernels, or cuDNN ones even on a machine without a GPU.

    Keras picks cuDNN only when it sees a GPU at trace time; a GPU-only export is traced on
    any machine by telling it one is there while the graph is built (nothing runs meanwhile).
    """
    if kernels == GENERIC:
        disable_cudnn(classifier)
        yield
        return
    recurrent = [layer for layer in classifier._flatten_layers(include_self=False, recursive=True)
                 if hasattr(layer, "use_cudnn")]
    if not recurrent:
        raise ValueError(f"model {classifier.name!r} has no recurrent layer to run on cuDNN")
    for layer in recurrent:
        layer.use_cudnn = True
    rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")
    sees_gpu = rnn._is_gpu_available
    rnn._is_gpu_available = lambda: True
    try:
        yield
    finally:
        rnn._is_gpu_available = sees_gpu
        disable_cudnn(classifier)


class _Ensemble(tf.Module):
    def __init__(self, members: list[Path], temperature: float, weights: list[float], pooling: str):
        super().__init__()
        self.members = [load_savedmodel(p) for p in members]
        self.temperature = temperature
        self.weights = [float(w) for w in weights]
        self.pooling = pooling

    @tf.function(input_signature=[_TEXT_SPEC])
    def serve(self, text):
        probs = [m.signatures[SIGNATURE_NAME](**{INPUT_KEY: text})[OUTPUT_KEY] for m in self.members]
        if self.pooling == MEAN:
            return {OUTPUT_KEY: _scale(tf.add_n([w * p for w, p in zip(self.weights, probs)]), self.temperature)}
        logits = tf.add_n([w * tf.math.log(tf.maximum(p, 1e-12)) for w, p in zip(self.weights, probs)])
        return {OUTPUT_KEY: tf.nn.softmax(logits / self.temperature, axis=-1)}


def write_ensemble_model(path: Path, members: list[Path], temperature: float = 1.0,
                         weights: list[float] | None = None, pooling: str = MEAN) -> None:
    """SavedModel pooling the members' probabilities: weighted arithmetic (``mean``, equal weights
    by default) or geometric (``product``) mean; the members are copied into the graph."""
    module = _Ensemble(members, temperature, weights or [1.0 / len(members)] * len(members), pooling)
    tf.saved_model.save(module, str(path), signatures={SIGNATURE_NAME: module.serve})


def write_warmup(path: Path, model_name: str, texts: list[str]) -> Path:
    """TF Serving warmup file: PredictionLog records replayed when a version loads."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(str(path)) as writer:
        for text in texts:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE_NAME))
            request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto([text], dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def _digest(validation: tuple[list[str], np.ndarray]) -> str:
    """Names a validation split (its texts and labels), so kept probabilities match their split."""
    texts, y = validation
    digest = hashlib.sha256("\0".join(texts).encode("utf-8"))
    digest.update(np.asarray(y, dtype=np.int64).tobytes())
    return digest.hexdigest()


def validation_probabilities(root: ModelRoot, model: str, version: int,
                             validation: tuple[list[str], np.ndarray]) -> np.ndarray:
    """An export's probabilities on ``validation``: the kept ones of the model validation chose
    when they are of this split, else the export's own (exports from before they were kept).

    A refitted export has seen validation, so without kept probabilities of this split it
    cannot be weighed on it.
    """
    version_dir = root.version_dir(model, version)
    kept = version_dir / EXTRA_DIR / VALIDATION_PROBS_FILE
    if kept.is_file():
        with np.load(kept, allow_pickle=False) as stored:
            if str(stored["validation_sha256"]) == _digest(validation):
                return stored["probabilities"]
    if root.read_metadata(model, version).settings.get("refit"):
        raise LayoutError(f"{model}/{version} was refitted on validation and keeps no "
                          "probabilities of this validation split: weigh it on the split of its own seed")
    return ServingModel(version_dir).predict(validation[0])


def _finish(root: ModelRoot, staging: Path, metadata: ExportMetadata,
            validation: tuple[list[str], np.ndarray], test: tuple[list[str], np.ndarray] | None,
            history: dict | None, serving_base: str, scored: Path | None = None,
            val_probs: np.ndarray | None = None) -> ExportMetadata:
    served = ServingModel(scored or staging)
    val_texts, val_y = validation
    if val_probs is None:
        val_probs = served.predict(val_texts)
    target = metadata.settings.get("target_precision", 0.97)
    metadata.threshold = choose_threshold(val_probs, val_y, target)
    metadata.metrics["val_accuracy"] = float(np.mean(val_probs.argmax(axis=1) == val_y))
    metadata.metrics["val_ece"] = expected_calibration_error(val_probs, val_y)
    if test is not None:
        summary, per_topic = classification_metrics(test[1], served.predict(test[0]), metadata.labels)
        metadata.metrics.update({f"test_{k}": v for k, v in summary.items()})
        metadata.per_topic = per_topic
    extra = staging / EXTRA_DIR
    extra.mkdir(exist_ok=True)
    (extra / LABELS_FILE).write_text("\n".join(metadata.labels) + "\n", encoding="utf-8")
    if history:
        (extra / HISTORY_FILE).write_text(json.dumps(history, indent=2), encoding="utf-8")
    np.savez(extra / VALIDATION_PROBS_FILE, probabilities=val_probs.astype(np.float32),
             validation_sha256=np.array(_digest(validation)))
    write_warmup(extra / WARMUP_FILE, metadata.model, [t for t in val_texts if t][:WARMUP_SAMPLES])
    metadata.tensorflow_version = tf.__version__
    (extra / METADATA_FILE).write_text(metadata.model_dump_json(indent=2), encoding="utf-8")
    metadata.version = root.publish(staging, metadata.model)
    root.write_models_config(serving_base)
    return metadata


def export_model(root: ModelRoot, name: str, encoder: TextEncoder, classifier: keras.Model, *,
                 variant: str, preset: str, settings: dict, labels: list[str] | tuple[str, ...],
                 validation: tuple[list[str], np.ndarray],
                 test: tuple[list[str], np.ndarray] | None = None,
                 temperature: float = 1.0, history: dict | None = None,
                 extra_metrics: dict[str, float] | None = None, kernels: str = GENERIC,
                 serving_base: str = DEFAULT_SERVING_BASE, val_probs: np.ndarray | None = None) -> ExportMetadata:
    """Export one trained classifier as the next version of ``name``; returns its metadata.

    With ``kernels="cudnn"`` the published graph needs a GPU, so the figures in its metadata
    come from the same weights traced with the generic kernels.
    """
    metadata = ExportMetadata(model=name, version=0, variant=variant, preset=preset,
                              settings=settings, labels=list(labels), temperature=temperature,
                              metrics=dict(extra_metrics or {}))
    stand_in = None
    if kernels != GENERIC:
        def stand_in(path: Path) -> None:
            write_serving_model(path, encoder, classifier, temperature)
    return export_savedmodel(
        root, name, lambda path: write_serving_model(path, encoder, classifier, temperature, kernels=kernels),
        metadata, validation=validation, test=test, history=history, stand_in=stand_in,
        serving_base=serving_base, val_probs=val_probs)


def export_savedmodel(root: ModelRoot, name: str, write: Callable[[Path], None], metadata: ExportMetadata, *,
                      validation: tuple[list[str], np.ndarray],
                      test: tuple[list[str], np.ndarray] | None = None, history: dict | None = None,
                      stand_in: Callable[[Path], None] | None = None,
                      serving_base: str = DEFAULT_SERVING_BASE,
                      val_probs: np.ndarray | None = None) -> ExportMetadata:
    """Export whatever ``write(path)`` saves (a raw-text ``serving_default`` signature) as the
    next version of ``name``, scored, thresholded and described like every other model.

    ``stand_in(path)``, when given, saves an equivalent SavedModel that runs on this machine;
    it is scored in place of the export (which may need hardware this machine lacks).
    ``val_probs`` are the validation probabilities of the model validation chose, when the
    export is another (a refit); by default the export is scored on validation.
    """
    staging = root.staging_dir(name)
    scored = None
    try:
        write(staging)
        if stand_in is not None:
            scored = root.staging_dir(name)
            stand_in(scored)
        return _finish(root, staging, metadata, validation, test, history, serving_base, scored, val_probs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if scored is not None:
            shutil.rmtree(scored, ignore_errors=True)


def export_ensemble(root: ModelRoot, members: list[str], *, labels: list[str] | tuple[str, ...],
                    validation: tuple[list[str], np.ndarray],
                    test: tuple[list[str], np.ndarray] | None = None, name: str = ENSEMBLE,
                    calibrate: bool = True, target_precision: float = 0.97, weighted: bool = False,
                    variant: str = ENSEMBLE,
                    serving_base: str = DEFAULT_SERVING_BASE) -> ExportMetadata:
    """Export the average of the latest versions of ``members`` as the next version of ``name``.

    The members must share the label list; the ensemble gets its own temperature (fitted on
    validation) and abstain threshold, since averaging changes how confident answers are.
    ``weighted`` instead pools with a weighted geometric mean whose weights and temperature are
    fitted on validation (:func:`training.ensemble.choose_weights`); members left with no weight
    are not part of the exported graph.
    """
    if not members:
        raise LayoutError("an ensemble needs at least one member")
    dirs, versions = [], {}
    for member in members:
        version = root.latest(member)
        if version is None:
            raise LayoutError(f"ensemble member {member!r} has no exported version under {root.path}")
        if root.read_labels(member, version) != list(labels):
            raise LayoutError(f"ensemble member {member}/{version} has different labels")
        dirs.append(root.version_dir(member, version))
        versions[member] = version
    member_probs = ([validation_probabilities(root, m, v, validation) for m, v in versions.items()]
                    if weighted or calibrate else [])
    pooling, weights, temperature = MEAN, np.full(len(dirs), 1.0 / len(dirs)), 1.0
    if weighted:
        pooling = PRODUCT
        weights, temperature = choose_weights(member_probs, validation[1])
    kept = [i for i, w in enumerate(weights) if w > 0]
    dirs, weights = [dirs[i] for i in kept], weights[kept]
    versions = {m: v for i, (m, v) in enumerate(versions.items()) if i in kept}
    if calibrate:
        pooled = pool([member_probs[i] for i in kept], weights, pooling)
        if not weighted:
            temperature = fit_temperature(pooled, validation[1])
        val_ece = expected_calibration_error(pooled, validation[1])
        pooled = apply_temperature(pooled, temperature)
        val_ece_scaled = expected_calibration_error(pooled, validation[1])
    staging = root.staging_dir(name)
    try:
        write_ensemble_model(staging, dirs, temperature, list(weights), pooling)
        settings = {"members": versions, "weights": dict(zip(versions, map(float, weights))),
                    "pooling": pooling, "target_precision": target_precision}
        metadata = ExportMetadata(model=name, version=0, variant=variant, preset="ensemble",
                                  settings=settings, labels=list(labels), temperature=temperature,
                                  members=[f"{m}/{v}" for m, v in versions.items()])
        if calibrate:
            metadata.metrics.update(val_ece_uncalibrated=val_ece, val_ece_calibrated=val_ece_scaled)
        return _finish(root, staging, metadata, validation, test, None, serving_base,
                       val_probs=pooled if calibrate else None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
