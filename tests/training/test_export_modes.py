"""A published version is readable by any uid: folders 0755, files 0644, whatever the umask."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from training.export import export_ensemble
from training.layout import ENSEMBLE, ModelRoot


@pytest.fixture
def strict_umask():
    """The umask of a hardened container: everything the process creates is private."""
    previous = os.umask(0o077)
    yield
    os.umask(previous)


def modes(path) -> dict[str, int]:
    out = {".": stat.S_IMODE(path.stat().st_mode)}
    for item in path.rglob("*"):
        out[str(item.relative_to(path))] = stat.S_IMODE(item.stat().st_mode)
    return out


def test_exported_version_is_world_readable(writable_model_root, reuters46, strict_umask):
    _, val = reuters46.validation_split(0.1, 7)
    meta = export_ensemble(writable_model_root, ["rnn", "gru"], labels=reuters46.labels,
                           validation=(val.texts()[:40], np.asarray(val.y[:40])), calibrate=False)
    version = writable_model_root.version_dir(ENSEMBLE, meta.version)
    found = modes(version)
    assert "saved_model.pb" in found and "assets.extra/metadata.json" in found
    assert any(name.startswith("variables/") for name in found)
    wrong = {name: oct(mode) for name, mode in found.items()
             if mode != (0o755 if (version / name).is_dir() else 0o644)}
    assert not wrong, f"not world-readable: {wrong}"
    assert stat.S_IMODE((writable_model_root.path / "models.config").stat().st_mode) == 0o644


def test_new_model_root_and_model_folder_are_world_readable(tmp_path, strict_umask):
    root = ModelRoot(tmp_path / "fresh" / "models")
    staging = root.staging_dir("gru")
    (staging / "saved_model.pb").write_bytes(b"")
    assert root.publish(staging, "gru") == 1
    for folder in (root.path, root.path / "gru", root.version_dir("gru", 1)):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
    assert stat.S_IMODE((root.version_dir("gru", 1) / "saved_model.pb").stat().st_mode) == 0o644
