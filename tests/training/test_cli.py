"""`python -m training`: bad inputs give one line and exit 2; the commands work end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.model_roots import graph_ops
from training.layout import EXTRA_DIR, ModelRoot

pytestmark = pytest.mark.integration  # every test here runs the CLI as a subprocess

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", *args], capture_output=True, text=True,
                          cwd=REPO, env=ENV, timeout=timeout)


def assert_clear_error(done: subprocess.CompletedProcess, fragment: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert fragment in lines[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize("args,fragment", [
    (["train", "--variant", "transformer"], "unknown variant 'transformer'"),
    (["train", "--preset", "huge"], "invalid choice: 'huge'"),
    (["train", "--units", "0"], "invalid setting units"),
    (["train", "--variant", "rnn", "--corpus", "/nonexistent/reuters"], "corpus not found"),
    (["data", "--corpus", "/nonexistent/reuters21578.tar.gz"], "corpus not found"),
    (["train", "--pooling", "median"], "invalid choice: 'median'"),
    (["train", "--kernels", "mkl"], "invalid choice: 'mkl'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "required: command"),
])
def test_bad_inputs_are_one_clear_line(args, fragment):
    assert_clear_error(run(*args), fragment)


def test_unwritable_model_root(tmp_path, corpus_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = run("train", "--variant", "rnn", "--corpus", str(corpus_dir), "--model-root", str(blocker / "models"))
    assert_clear_error(done, "is not writable")


def test_corrupt_corpus(tmp_path, corpus_dir):
    broken = tmp_path / "reuters21578"
    broken.mkdir()
    for path in Path(corpus_dir).iterdir():
        (broken / path.name).symlink_to(path.resolve())
    (broken / "reut2-007.sgm").unlink()
    (broken / "reut2-007.sgm").write_bytes(b"<REUTERS garbage")
    assert_clear_error(run("data", "--corpus", str(broken)), "reut2-007.sgm is corrupt")


def test_data_prints_counts_and_checks(corpus_dir):
    done = run("data", "--corpus", str(corpus_dir))
    assert done.returncode == 0, done.stderr
    assert "reuters46       11228 documents, 46 topics" in done.stdout
    assert "split           train 8982, test 2246" in done.stdout
    assert "0 cocoa, 1 grain, 2 veg-oil, 3 earn, 4 acq" in done.stdout
    assert "checks          ok" in done.stdout


@pytest.mark.slow
def test_train_evaluate_report_label(tmp_path, corpus_dir):
    root = tmp_path / "models"
    done = run("train", "--variant", "gru", "--preset", "quick", "--corpus", str(corpus_dir),
               "--model-root", str(root), "--log-dir", str(tmp_path / "runs"), "--serving-base-path", "/srv/m",
               "--epochs", "1", "--train-limit", "300", "--test-limit", "100", "--vocab-size", "1000",
               "--max-length", "24", "--units", "4", "--embedding-dim", "8")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[gru] exported gru/1: test accuracy" in done.stdout
    models = ModelRoot(root)
    meta = models.read_metadata("gru", 1)
    assert meta.preset == "quick" and meta.settings["max_length"] == 24 and meta.settings["epochs"] == 1
    assert 'base_path: "/srv/m/gru"' in (root / "models.config").read_text()
    assert any((tmp_path / "runs" / "gru").rglob("events.out.tfevents.*"))

    done = run("evaluate", "gru", "--model-root", str(root), "--corpus", str(corpus_dir), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["metrics"]["n"] == 2246 and len(report["per_topic"]) == 46
    extra = models.version_dir("gru", 1) / EXTRA_DIR
    for name in ("confusion_matrix.png", "training_curve.png", "evaluation.json"):
        assert (extra / name).stat().st_size > 0
    assert (extra / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"

    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps([{"name": "tfidf-svm", "accuracy": 0.9, "macro_f1": 0.8}]))
    done = run("report", "--model-root", str(root), "--extra", str(baseline), "--png", str(tmp_path / "r.png"))
    assert done.returncode == 0, done.stderr
    assert "| gru v1 |" in done.stdout and "| tfidf-svm | 0.900 | 0.800 |" in done.stdout
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"

    assert run("label", "gru", "canary", "1", "--model-root", str(root)).returncode == 0
    assert models.version_labels("gru") == {"canary": 1}
    assert 'version_labels { key: "canary" value: 1 }' in (root / "models.config").read_text()
    assert_clear_error(run("label", "gru", "stable", "9", "--model-root", str(root)), "has no version 9")
    assert_clear_error(run("evaluate", "lstm", "--model-root", str(root)), "no exported model 'lstm'")


def test_train_holding_out_validation_scores_on_validation(tmp_path, corpus_dir, reuters46):
    """The exports' "test" figures are of the validation split, which training never reads."""
    root = tmp_path / "models"
    done = run("train", "--variant", "ngram", "--hold-out-validation", "--seed", "2", "--corpus", str(corpus_dir),
               "--model-root", str(root), "--train-limit", "300")
    assert done.returncode == 0, done.stderr[-3000:]
    fit, val = reuters46.validation_split(0.1, 2)
    assert (f"training on {len(fit)} documents, scoring on {len(val)} validation documents in place of test"
            in done.stdout)
    assert ModelRoot(root).read_metadata("ngram", 1).metrics["test_n"] == len(val)


def test_train_exports_the_cudnn_flavour_on_request(tmp_path, corpus_dir):
    """`--kernels cudnn` publishes a GPU-only graph; its figures come from the same weights traced
    with the generic kernels, since this machine has no GPU to run the cuDNN graph on."""
    root = tmp_path / "models"
    done = run("train", "--variant", "gru", "--preset", "quick", "--corpus", str(corpus_dir), "--kernels", "cudnn",
               "--model-root", str(root), "--log-dir", str(tmp_path / "runs"), "--epochs", "1",
               "--train-limit", "200", "--test-limit", "50", "--vocab-size", "500", "--max-length", "16",
               "--units", "4", "--embedding-dim", "8")
    assert done.returncode == 0, done.stderr[-3000:]
    models = ModelRoot(root)
    assert "CudnnRNNV3" in graph_ops(models.version_dir("gru", 1))
    assert 0.0 <= models.read_metadata("gru", 1).metrics["test_accuracy"] <= 1.0


def test_train_all_trains_the_sentence_member_into_the_ensemble(tmp_path, corpus_dir, tiny_encoder):
    root = tmp_path / "models"
    done = run("train", "--variant", "all", "--preset", "quick", "--corpus", str(corpus_dir), "--model-root", str(root),
               "--log-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--epochs", "1",
               "--train-limit", "200", "--test-limit", "50", "--vocab-size", "500", "--max-length", "16",
               "--units", "4", "--embedding-dim", "8", "--sentence-pieces", "16", "--sentence-encoder", str(tiny_encoder),
               timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[sentence] exported sentence/1: test accuracy" in done.stdout
    models = ModelRoot(root)
    meta = models.read_metadata("sentence", 1)
    assert meta.settings["sentence_pieces"] == 16 and meta.settings["sentence_encoder"] == str(tiny_encoder)
    assert list((tmp_path / "cache" / "sentence").glob("*-16.npz"))
    assert 'name: "sentence"' in (root / "models.config").read_text()
    assert models.versions("ensemble") == [1] and models.versions("gru-ngram") == [1]


def test_sentence_member_without_its_encoder_is_one_clear_line(tmp_path, corpus_dir):
    done = run("train", "--variant", "sentence", "--corpus", str(corpus_dir), "--model-root", str(tmp_path / "m"),
               "--sentence-encoder", str(tmp_path / "nowhere"), "--train-limit", "100")
    assert_clear_error(done, "lacks config.json")


def test_evaluate_refuses_a_model_trained_on_other_labels(tmp_path, tiny_model_root, corpus_dir):
    root = tmp_path / "models"
    shutil.copytree(tiny_model_root, root)
    labels = root / "rnn" / "1" / EXTRA_DIR / "labels.txt"
    labels.write_text("\n".join(reversed(labels.read_text().split())) + "\n")
    assert_clear_error(run("evaluate", "rnn", "--model-root", str(root), "--corpus", str(corpus_dir)),
                       "other labels")
