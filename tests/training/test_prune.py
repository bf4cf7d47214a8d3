"""``python -m training prune --keep N``: old versions go, the newest N and labelled ones stay."""

from __future__ import annotations

import shutil
import stat

import pytest

from training.__main__ import main
from training.layout import ModelRoot


@pytest.fixture
def root(writable_model_root) -> ModelRoot:
    """gru with versions 1..5 (copies of the real tiny export), rnn with version 1."""
    for version in range(2, 6):
        shutil.copytree(writable_model_root.version_dir("gru", 1), writable_model_root.version_dir("gru", version))
    return writable_model_root


def test_keeps_the_newest_versions(root, capsys):
    assert main(["prune", "--model-root", str(root.path), "--keep", "2", "gru"]) == 0
    assert root.versions("gru") == [4, 5]
    assert "gru: removed 1, 2, 3; versions left 4, 5" in capsys.readouterr().out
    assert not [p for p in (root.path / "gru").iterdir() if p.name.startswith(".")], "no hidden leftovers"
    assert root.versions("rnn") == [1]


def test_never_removes_a_labelled_version(root, capsys):
    root.set_version_label("gru", "stable", 2)
    root.set_version_label("gru", "previous", 2)
    config_before = (root.path / "models.config").read_text()
    assert main(["prune", "--model-root", str(root.path), "--keep", "1"]) == 0
    assert root.versions("gru") == [2, 5]
    out = capsys.readouterr().out
    assert "gru: kept 2: label previous, stable points to it" in out
    assert "rnn: removed nothing; versions left 1" in out
    # TF Serving's config still names exactly the versions that exist.
    assert (root.path / "models.config").read_text() == config_before
    assert "versions: 2" in config_before and "versions: 5" in config_before


def test_dry_run_removes_nothing(root, capsys):
    assert main(["prune", "--model-root", str(root.path), "--keep", "3", "--dry-run", "gru"]) == 0
    assert root.versions("gru") == [1, 2, 3, 4, 5]
    assert "gru: would remove 1, 2; versions left 3, 4, 5" in capsys.readouterr().out


@pytest.mark.parametrize("args, fragment", [
    (["--keep", "0"], "--keep must be at least 1"),
    (["--keep", "2", "nosuch"], "no model 'nosuch'"),
    ([], "--keep"),
])
def test_bad_arguments_are_one_line_and_remove_nothing(root, capsys, args, fragment):
    assert main(["prune", "--model-root", str(root.path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1
    assert root.versions("gru") == [1, 2, 3, 4, 5]


def test_model_root_files_are_world_readable(root):
    """Label and config files are replaced atomically with modes every reader can open."""
    root.set_version_label("gru", "stable", 3)
    for name in ("models.config", "gru/version_labels.json"):
        assert stat.S_IMODE((root.path / name).stat().st_mode) == 0o644, name


def test_rewrites_models_config_with_models_copied_in(root, capsys):
    """A model copied in from elsewhere appears in models.config once prune has run."""
    shutil.copytree(root.version_dir("gru", 5), root.version_dir("imported", 7))
    assert 'name: "imported"' not in (root.path / "models.config").read_text()
    assert main(["prune", "--model-root", str(root.path), "--keep", "1", "--serving-base-path", "/srv/m"]) == 0
    config = (root.path / "models.config").read_text()
    assert 'name: "imported"' in config and 'base_path: "/srv/m/imported"' in config
    assert root.versions("imported") == [7] and root.versions("gru") == [5]
