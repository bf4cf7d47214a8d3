"""Atomic, growing versions: staging folders stay invisible and never outlive an export."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from training.export import export_ensemble
from training.layout import ENSEMBLE, LayoutError, ModelRoot


@pytest.fixture
def root(tmp_path, tiny_model_root) -> ModelRoot:
    copy = tmp_path / "models"
    shutil.copytree(tiny_model_root, copy)
    return ModelRoot(copy)


def _validation(reuters46, n=60):
    _, val = reuters46.validation_split(0.1, 7)
    return val.texts()[:n], val.y[:n]


def test_versions_only_grow_and_models_config_follows(root, reuters46):
    for expected in (2, 3):
        meta = export_ensemble(root, ["rnn", "gru"], labels=reuters46.labels,
                               validation=_validation(reuters46), calibrate=False)
        assert meta.version == expected
        assert root.read_metadata(ENSEMBLE, expected).version == expected
    assert root.versions(ENSEMBLE) == [1, 2, 3]
    assert 'name: "ensemble"' in (root.path / "models.config").read_text()
    assert not [p for p in (root.path / ENSEMBLE).iterdir() if p.name.startswith(".staging")]


def test_concurrent_exports_get_distinct_versions(root, reuters46):
    results, errors = [], []

    def export():
        try:
            results.append(export_ensemble(root, ["rnn"], labels=reuters46.labels,
                                           validation=_validation(reuters46, 20), calibrate=False).version)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=export) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert sorted(results) == [2, 3] and root.versions(ENSEMBLE) == [1, 2, 3]


def test_staging_folder_is_invisible_until_published(root):
    staging = root.staging_dir("gru")
    shutil.copytree(root.version_dir("gru", 1), staging, dirs_exist_ok=True)
    assert root.versions("gru") == [1] and root.latest("gru") == 1
    assert root.publish(staging, "gru") == 2
    assert root.versions("gru") == [1, 2] and not staging.exists()


def test_failed_export_leaves_no_version_and_no_staging(root, reuters46):
    with pytest.raises(ValueError):
        export_ensemble(root, ["rnn", "gru"], labels=reuters46.labels,
                        validation=([], np.array([], dtype=int)), calibrate=False)
    assert root.versions(ENSEMBLE) == [1]
    assert not [p for p in (root.path / ENSEMBLE).iterdir() if p.name.startswith(".staging")]


def test_ensemble_refuses_missing_members_and_other_labels(root, reuters46):
    with pytest.raises(LayoutError, match="'lstm' has no exported version"):
        export_ensemble(root, ["rnn", "lstm"], labels=reuters46.labels, validation=_validation(reuters46))
    with pytest.raises(LayoutError, match="different labels"):
        export_ensemble(root, ["rnn"], labels=list(reversed(reuters46.labels)),
                        validation=_validation(reuters46))
