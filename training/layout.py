"""The model-root layout and export metadata: the contract between training and serving.

TensorFlow-free on purpose, so the gateway and workers can read a model root without loading
TensorFlow, and so TF Serving's own layout (``<root>/<model>/<version>/``) stays the single
source of truth.

    <root>/models.config                       TF Serving model_config_list (text format)
    <root>/<model>/version_labels.json         {"stable": 3, "canary": 4} (optional)
    <root>/<model>/<version>/saved_model.pb    SavedModel, signature ``serving_default``
    <root>/<model>/<version>/assets.extra/labels.txt
    <root>/<model>/<version>/assets.extra/metadata.json
    <root>/<model>/<version>/assets.extra/tf_serving_warmup_requests
    <root>/<model>/.staging-*/                 a version being written (invisible to pollers)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

SIGNATURE_NAME = "serving_default"
INPUT_KEY = "text"
OUTPUT_KEY = "probabilities"
# A masked recurrent export also carries its two halves, so an in-process runner can compile the
# numeric half (XLA) apart from the string ops: text -> ids, and ids -> probabilities.
ENCODE_SIGNATURE, IDS_SIGNATURE, IDS_KEY = "encode_text", "classify_ids", "ids"
VARIANTS = ("rnn", "lstm", "gru", "bilstm")
ENSEMBLE = "ensemble"
NGRAM = "ngram"  # the TF-IDF 1-2-gram linear model (training/ngrams.py)
SENTENCE = "sentence"  # a frozen pretrained sentence encoder and a linear model (training/sentence.py)
# Recurrent kernels traced into an export: generic (CPU and GPU) or cuDNN (GPU only).
GENERIC, CUDNN = "generic", "cudnn"
EXTRA_DIR = "assets.extra"
LABELS_FILE = "labels.txt"
METADATA_FILE = "metadata.json"
WARMUP_FILE = "tf_serving_warmup_requests"
VERSION_LABELS_FILE = "version_labels.json"
# What the model validation judged gives on validation, kept so a refitted member can be pooled.
VALIDATION_PROBS_FILE = "validation_probabilities.npz"
MODELS_CONFIG = "models.config"
DEFAULT_SERVING_BASE = "/models"
# Exports are world-readable so that TF Serving, gateways and workers read them under any uid
# (Kubernetes runAsUser, NFS, models copied in from another machine).
DIR_MODE = 0o755
FILE_MODE = 0o644

_MODEL_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}\Z")
_LABEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}\Z")


class LayoutError(Exception):
    """A model root that is missing, unwritable or does not follow the layout."""


class Threshold(BaseModel):
    """Abstain threshold: answers whose top probability is below ``value`` are not confident."""

    value: float
    target_precision: float
    precision: float
    coverage: float


class ExportMetadata(BaseModel):
    """What sits beside each exported SavedModel; read by the gateway, workers and reports."""

    model: str
    version: int
    variant: str
    preset: str
    settings: dict = Field(default_factory=dict)
    dataset: str = "reuters46"
    labels: list[str]
    metrics: dict[str, float] = Field(default_factory=dict)
    per_topic: dict[str, dict[str, float]] = Field(default_factory=dict)
    temperature: float = 1.0
    threshold: Threshold | None = None
    members: list[str] = Field(default_factory=list)
    signature: str = SIGNATURE_NAME
    input_key: str = INPUT_KEY
    output_key: str = OUTPUT_KEY
    tensorflow_version: str = ""
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


def check_model_name(name: str) -> str:
    if not _MODEL_NAME.match(name):
        raise LayoutError(f"invalid model name {name!r}: use lowercase letters, digits, '-' or '_'")
    return name


class ModelRoot:
    """A folder of versioned models in TF Serving's layout."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ModelRoot({str(self.path)!r})"

    # -- reading -------------------------------------------------------------------------
    def models(self) -> list[str]:
        """Model names that have at least one complete version."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir()
                      if p.is_dir() and _MODEL_NAME.match(p.name) and self.versions(p.name))

    def versions(self, model: str) -> list[int]:
        """Complete versions of ``model``, oldest first (staging folders are never listed)."""
        base = self.path / model
        if not base.is_dir():
            return []
        return sorted(int(p.name) for p in base.iterdir()
                      if p.name.isdigit() and (p / "saved_model.pb").is_file())

    def latest(self, model: str) -> int | None:
        versions = self.versions(model)
        return versions[-1] if versions else None

    def version_dir(self, model: str, version: int) -> Path:
        return self.path / model / str(version)

    def read_metadata(self, model: str, version: int) -> ExportMetadata:
        path = self.version_dir(model, version) / EXTRA_DIR / METADATA_FILE
        try:
            return ExportMetadata.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise LayoutError(f"{path} is missing") from exc

    def read_labels(self, model: str, version: int) -> list[str]:
        path = self.version_dir(model, version) / EXTRA_DIR / LABELS_FILE
        try:
            return path.read_text(encoding="utf-8").split()
        except FileNotFoundError as exc:
            raise LayoutError(f"{path} is missing") from exc

    def version_labels(self, model: str) -> dict[str, int]:
        path = self.path / model / VERSION_LABELS_FILE
        if not path.is_file():
            return {}
        return {str(k): int(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}

    # -- writing -------------------------------------------------------------------------
    def ensure_writable(self) -> None:
        try:
            if not self.path.is_dir():
                self.path.mkdir(parents=True, exist_ok=True)
                self.path.chmod(DIR_MODE)
            with tempfile.NamedTemporaryFile(dir=self.path, prefix=".probe-"):
                pass
        except OSError as exc:
            raise LayoutError(f"model root {self.path} is not writable: {exc.strerror or exc}") from exc

    def staging_dir(self, model: str) -> Path:
        """A fresh hidden folder beside the versions; pollers ignore non-numeric names."""
        check_model_name(model)
        self.ensure_writable()
        base = self.path / model
        if not base.is_dir():
            base.mkdir(parents=True, exist_ok=True)
            base.chmod(DIR_MODE)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=base))

    def publish(self, staging: Path, model: str) -> int:
        """Atomically turn a staging folder into the next version and return that version.

        ``os.rename`` of a folder onto a name that does not exist is atomic on POSIX; if a
        concurrent export took the number first, the next one is tried.
        """
        staging = Path(staging)
        if not (staging / "saved_model.pb").is_file():
            raise LayoutError(f"{staging} holds no saved_model.pb")
        make_world_readable(staging)
        while True:
            version = (self.latest(model) or 0) + 1
            metadata_path = staging / EXTRA_DIR / METADATA_FILE
            if metadata_path.is_file():
                meta = ExportMetadata.model_validate_json(metadata_path.read_text(encoding="utf-8"))
                meta.version = version
                metadata_path.write_text(meta.model_dump_json(indent=2), encoding="utf-8")
            target = self.version_dir(model, version)
            try:
                os.rename(staging, target)
            except OSError:
                if target.exists():
                    continue
                raise
            return version

    def set_version_label(self, model: str, label: str, version: int | None,
                          serving_base: str = DEFAULT_SERVING_BASE) -> None:
        """Point ``label`` at ``version`` (or remove it with ``None``), then rewrite models.config."""
        if not _LABEL_NAME.match(label):
            raise LayoutError(f"invalid version label {label!r}")
        labels = self.version_labels(model)
        if version is None:
            labels.pop(label, None)
        else:
            if version not in self.versions(model):
                raise LayoutError(f"model {model!r} has no version {version}")
            labels[label] = version
        path = self.path / model / VERSION_LABELS_FILE
        _atomic_write(path, json.dumps(labels, indent=2, sort_keys=True))
        self.write_models_config(serving_base)

    def remove_version(self, model: str, version: int) -> None:
        shutil.rmtree(self.version_dir(model, version))

    def prune(self, model: str, keep: int, dry_run: bool = False) -> tuple[list[int], dict[int, list[str]]]:
        """Remove all but the newest ``keep`` versions of ``model``; never a labelled version.

        Returns the removed versions and the older versions kept because a label points to
        them (label names by version). Each folder is first renamed to a hidden name, so a
        poller stops seeing the version at once and never sees it half deleted.
        """
        if keep < 1:
            raise LayoutError(f"--keep must be at least 1 (the newest version is always served), got {keep}")
        labelled: dict[int, list[str]] = {}
        for label, version in self.version_labels(model).items():
            labelled.setdefault(version, []).append(label)
        older = self.versions(model)[:-keep]
        removed = [v for v in older if v not in labelled]
        held = {v: sorted(labelled[v]) for v in older if v in labelled}
        if not dry_run:
            for version in removed:
                hidden = Path(tempfile.mkdtemp(prefix=f".pruning-{version}-", dir=self.path / model))
                os.rename(self.version_dir(model, version), hidden / "version")
                shutil.rmtree(hidden)
        return removed, held

    def models_config(self, serving_base: str = DEFAULT_SERVING_BASE) -> str:
        """TF Serving's ``model_config_list`` for every model under the root.

        Without version labels TF Serving serves the newest version; with labels it serves the
        labelled versions plus the newest, so a canary and the stable version run side by side.
        """
        blocks = []
        for model in self.models():
            labels = self.version_labels(model)
            lines = [
                "  config {",
                f'    name: "{model}"',
                f'    base_path: "{serving_base.rstrip("/")}/{model}"',
                '    model_platform: "tensorflow"',
            ]
            if labels:
                wanted = sorted(set(labels.values()) | {self.latest(model)})
                lines.append("    model_version_policy {")
                lines.append("      specific {")
                lines += [f"        versions: {v}" for v in wanted]
                lines.append("      }")
                lines.append("    }")
                for label, version in sorted(labels.items()):
                    lines.append(f'    version_labels {{ key: "{label}" value: {version} }}')
            else:
                lines.append("    model_version_policy { latest { num_versions: 1 } }")
            lines.append("  }")
            blocks.append("\n".join(lines))
        return "model_config_list {\n" + "\n".join(blocks) + ("\n" if blocks else "") + "}\n"

    def write_models_config(self, serving_base: str = DEFAULT_SERVING_BASE) -> Path:
        path = self.path / MODELS_CONFIG
        _atomic_write(path, self.models_config(serving_base))
        return path


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)


def make_world_readable(path: Path) -> None:
    """``DIR_MODE`` on ``path`` and every folder under it, ``FILE_MODE`` on every file."""
    path.chmod(DIR_MODE)
    for folder, dirs, files in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(folder, name), DIR_MODE)
        for name in files:
            os.chmod(os.path.join(folder, name), FILE_MODE)
