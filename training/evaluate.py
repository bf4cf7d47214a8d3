"""Evaluation of EXPORTED models, through the serving signature the service calls.

Scoring the SavedModel rather than the in-memory Keras model means the reported figures cover
the in-graph tokenisation and the baked-in temperature too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.calibration import expected_calibration_error
from training.layout import EXTRA_DIR, INPUT_KEY, OUTPUT_KEY, SIGNATURE_NAME, ModelRoot
from training.savedmodel import load as load_savedmodel

HISTORY_FILE = "history.json"
EVALUATION_FILE = "evaluation.json"
CONFUSION_PNG = "confusion_matrix.png"
CURVE_PNG = "training_curve.png"


class ServingModel:
    """A SavedModel loaded the way the service loads it: its ``serving_default`` signature."""

    def __init__(self, path: str | Path):
        import tensorflow as tf
        self._tf = tf
        self.path = Path(path)
        self._loaded = load_savedmodel(self.path)
        self._signature = self._loaded.signatures[SIGNATURE_NAME]

    def predict(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """Probabilities ``[len(texts), n_labels]`` for raw texts."""
        parts = []
        for start in range(0, len(texts), batch_size):
            batch = self._tf.constant(list(texts[start:start + batch_size]), dtype=self._tf.string)
            parts.append(self._signature(**{INPUT_KEY: batch})[OUTPUT_KEY].numpy())
        if not parts:
            raise ValueError("nothing to predict")
        return np.concatenate(parts)


def classification_metrics(y: np.ndarray, probs: np.ndarray, labels: list[str] | tuple[str, ...]
                            ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(summary metrics, per-topic precision/recall/F1/support)."""
    predicted = probs.argmax(axis=1)
    per_topic: dict[str, dict[str, float]] = {}
    f1s = []
    for i, name in enumerate(labels):
        tp = float(np.sum((predicted == i) & (y == i)))
        n_pred, n_true = float(np.sum(predicted == i)), float(np.sum(y == i))
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_topic[name] = {"precision": precision, "recall": recall, "f1": f1, "support": n_true}
        if n_true:
            f1s.append(f1)
    summary = {
        "accuracy": float(np.mean(predicted == y)),
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "ece": expected_calibration_error(probs, y),
        "n": float(len(y)),
    }
    return summary, per_topic


def confusion_matrix(y: np.ndarray, predicted: np.ndarray, n_labels: int) -> np.ndarray:
    matrix = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(matrix, (y, predicted), 1)
    return matrix


def plot_confusion(matrix: np.ndarray, labels: list[str], title: str, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(12, 11))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted topic")
    ax.set_ylabel("true topic")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.04, label="share of the true topic's documents")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_history(history: dict[str, list[float]], title: str, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", loss_ax), ("accuracy", acc_ax)):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, marker="o",
                        label=("validation " if prefix else "training ") + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


@dataclass
class Evaluation:
    model: str
    version: int
    metrics: dict[str, float]
    per_topic: dict[str, dict[str, float]]
    files: list[Path]


def evaluate_export(root: ModelRoot, model: str, version: int | None, texts: list[str],
                    y: np.ndarray, labels: tuple[str, ...] | list[str]) -> Evaluation:
    """Score ``root/model/version`` (latest when None) on ``texts``; write the report files.

    Writes ``evaluation.json``, the confusion-matrix PNG and (when the export carries its
    training history) the training-curve PNG into the version's ``assets.extra/``.
    """
    version = version if version is not None else root.latest(model)
    if version is None or version not in root.versions(model):
        raise FileNotFoundError(f"no exported model {model!r} version {version} under {root.path}")
    exported_labels = root.read_labels(model, version)
    if list(exported_labels) != list(labels):
        raise ValueError(f"{model}/{version} was trained on other labels than this dataset's")
    probs = ServingModel(root.version_dir(model, version)).predict(texts)
    metrics, per_topic = classification_metrics(y, probs, labels)
    extra = root.version_dir(model, version) / EXTRA_DIR
    title = f"{model} v{version}: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}"
    files = [plot_confusion(confusion_matrix(y, probs.argmax(axis=1), len(labels)), list(labels),
                            title, extra / CONFUSION_PNG)]
    history_path = extra / HISTORY_FILE
    if history_path.is_file():
        history = json.loads(history_path.read_text(encoding="utf-8"))
        files.append(plot_history(history, f"{model} v{version} training", extra / CURVE_PNG))
    report = extra / EVALUATION_FILE
    report.write_text(json.dumps({"model": model, "version": version, "metrics": metrics,
                                  "per_topic": per_topic}, indent=2), encoding="utf-8")
    files.append(report)
    return Evaluation(model, version, metrics, per_topic, files)
