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
(metrics), add labels, metadata, training history and TF Serving warmup requests under
``assets.extra/``, publish the folder atomically as the next version and rewrite
``models.config``.  Exports are traced with cuDNN kernels disabled so the same SavedModel
serves on CPU and GPU.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training.calibration import apply_temperature, choose_threshold, expected_calibration_error, fit_temperature
from training.evaluate import HISTORY_FILE, ServingModel, classification_metrics
from training.layout import (DEFAULT_SERVING_BASE, ENSEMBLE, EXTRA_DIR, INPUT_KEY, LABELS_FILE,
                             METADATA_FILE, OUTPUT_KEY, SIGNATURE_NAME, WARMUP_FILE, ExportMetadata,
                             LayoutError, ModelRoot)
from training.models import TextEncoder, disable_cudnn

WARMUP_SAMPLES = 4
_TEXT_SPEC = tf.TensorSpec(shape=[None], dtype=tf.string, name=INPUT_KEY)


def _scale(probs: tf.Tensor, temperature: float) -> tf.Tensor:
    probs = tf.cast(probs, tf.float32)
    if temperature == 1.0:
        return probs
    return tf.nn.softmax(tf.math.log(tf.maximum(probs, 1e-12)) / temperature, axis=-1)


def write_serving_model(path: Path, encoder: TextEncoder, classifier: keras.Model,
                        temperature: float = 1.0) -> None:
    """SavedModel at ``path``: ``serving_default(text: string[None]) -> {probabilities}``."""
    disable_cudnn(classifier)
    archive = keras.export.ExportArchive()
    archive.track(encoder.vectorizer)
    archive.track(classifier)

    def serve(text):
        probs = classifier(encoder(text), training=False)
        return {OUTPUT_KEY: _scale(probs, temperature)}

    archive.add_endpoint(name=SIGNATURE_NAME, fn=serve, input_signature=[_TEXT_SPEC])
    archive.write_out(str(path), verbose=False)


class _Ensemble(tf.Module):
    def __init__(self, members: list[Path], temperature: float):
        super().__init__()
        self.members = [tf.saved_model.load(str(p)) for p in members]
        self.temperature = temperature

    @tf.function(input_signature=[_TEXT_SPEC])
    def serve(self, text):
        probs = [m.signatures[SIGNATURE_NAME](**{INPUT_KEY: text})[OUTPUT_KEY] for m in self.members]
        return {OUTPUT_KEY: _scale(tf.add_n(probs) / len(probs), self.temperature)}


def write_ensemble_model(path: Path, members: list[Path], temperature: float = 1.0) -> None:
    """SavedModel averaging the members' probabilities; the members are copied into the graph."""
    module = _Ensemble(members, temperature)
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


def _finish(root: ModelRoot, staging: Path, metadata: ExportMetadata,
            validation: tuple[list[str], np.ndarray], test: tuple[list[str], np.ndarray] | None,
            history: dict | None, serving_base: str) -> ExportMetadata:
    served = ServingModel(staging)
    val_texts, val_y = validation
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
                 extra_metrics: dict[str, float] | None = None,
                 serving_base: str = DEFAULT_SERVING_BASE) -> ExportMetadata:
    """Export one trained classifier as the next version of ``name``; returns its metadata."""
    staging = root.staging_dir(name)
    try:
        write_serving_model(staging, encoder, classifier, temperature)
        metadata = ExportMetadata(model=name, version=0, variant=variant, preset=preset,
                                  settings=settings, labels=list(labels), temperature=temperature,
                                  metrics=dict(extra_metrics or {}))
        return _finish(root, staging, metadata, validation, test, history, serving_base)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_ensemble(root: ModelRoot, members: list[str], *, labels: list[str] | tuple[str, ...],
                    validation: tuple[list[str], np.ndarray],
                    test: tuple[list[str], np.ndarray] | None = None, name: str = ENSEMBLE,
                    calibrate: bool = True, target_precision: float = 0.97,
                    serving_base: str = DEFAULT_SERVING_BASE) -> ExportMetadata:
    """Export the average of the latest versions of ``members`` as the next version of ``name``.

    The members must share the label list; the ensemble gets its own temperature (fitted on
    validation) and abstain threshold, since averaging changes how confident answers are.
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
    temperature = 1.0
    if calibrate:
        averaged = np.mean([ServingModel(d).predict(validation[0]) for d in dirs], axis=0)
        temperature = fit_temperature(averaged, validation[1])
        val_ece = expected_calibration_error(averaged, validation[1])
        val_ece_scaled = expected_calibration_error(apply_temperature(averaged, temperature), validation[1])
    staging = root.staging_dir(name)
    try:
        write_ensemble_model(staging, dirs, temperature)
        settings = {"members": versions, "target_precision": target_precision}
        metadata = ExportMetadata(model=name, version=0, variant=ENSEMBLE, preset="ensemble",
                                  settings=settings, labels=list(labels), temperature=temperature,
                                  members=[f"{m}/{v}" for m, v in versions.items()])
        if calibrate:
            metadata.metrics.update(val_ece_uncalibrated=val_ece, val_ece_calibrated=val_ece_scaled)
        return _finish(root, staging, metadata, validation, test, None, serving_base)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
