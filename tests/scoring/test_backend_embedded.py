"""The embedded backend against the real tiny SavedModels: answers, errors, labels, hot swap."""

from __future__ import annotations

import gc
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scoring.backends import create_backend
from scoring.backends.embedded import EmbeddedBackend, read_warmup_requests
from scoring.errors import DeadlineExceeded, InvalidArgument, NotFound, ResourceExhausted
from scoring.settings import BackendSettings
from tests.support.model_roots import SAMPLE_TEXTS, publish_copy, publish_numeric_model, saved_model_probabilities
from tests.support.processes import REPO, wait_for
from tests.support.traffic import Traffic
from training.layout import EXTRA_DIR, WARMUP_FILE, ModelRoot


@pytest.fixture(scope="module")
def backend(tiny_model_root):
    backend = create_backend(BackendSettings(model_root=tiny_model_root))
    assert isinstance(backend, EmbeddedBackend)
    backend.refresh()
    yield backend
    backend.close()


@pytest.mark.parametrize("model", ["rnn", "gru", "sentence", "ensemble"])
def test_same_probabilities_as_the_saved_model(backend, tiny_model_root, model):
    root = ModelRoot(tiny_model_root)
    result = backend.classify(SAMPLE_TEXTS, model)
    expected = saved_model_probabilities(root, model, 1, SAMPLE_TEXTS)
    assert (result.model, result.version) == (model, 1)
    assert result.labels == root.read_labels(model, 1)
    assert result.probabilities.shape == (len(SAMPLE_TEXTS), len(result.labels))
    np.testing.assert_allclose(result.probabilities, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-4)


def test_models_and_readiness(backend, tiny_model_root):
    infos = {info.name: info for info in backend.models()}
    assert set(infos) == set(ModelRoot(tiny_model_root).models())
    assert [v.version for v in infos["rnn"].versions] == [1]
    assert infos["rnn"].versions[0].metadata.model == "rnn"
    assert backend.ready() and backend.ready("gru")
    assert not backend.ready("nope")


def test_unknown_model_version_or_label_is_not_found(backend):
    with pytest.raises(NotFound, match="nope"):
        backend.classify(["text"], "nope")
    with pytest.raises(NotFound, match="version 7"):
        backend.classify(["text"], "rnn", version=7)
    with pytest.raises(NotFound, match="canary"):
        backend.classify(["text"], "rnn", version_label="canary")


def test_bad_calls_are_invalid_or_past_deadline(backend):
    with pytest.raises(InvalidArgument):
        backend.classify(["text"], "rnn", version=1, version_label="stable")
    with pytest.raises(InvalidArgument):
        backend.classify("a plain string, not a list", "rnn")
    with pytest.raises(DeadlineExceeded):
        backend.classify(["text"], "rnn", timeout=0)
    empty = backend.classify([], "rnn")
    assert empty.probabilities.shape == (0, len(empty.labels))


def test_warmup_records_of_the_export_are_readable(tiny_model_root):
    requests = read_warmup_requests(Path(tiny_model_root) / "rnn" / "1" / EXTRA_DIR / WARMUP_FILE)
    assert requests and all(r.model_spec.name == "rnn" and "text" in r.inputs for r in requests)


def test_version_label_picks_the_labelled_version(writable_model_root):
    root = writable_model_root
    assert publish_copy(root, "rnn", 1) == 2
    root.set_version_label("rnn", "stable", 1)
    backend = EmbeddedBackend(BackendSettings(model_root=root.path), poll=False)
    try:
        assert backend.classify(SAMPLE_TEXTS[:1], "rnn").version == 2
        assert backend.classify(SAMPLE_TEXTS[:1], "rnn", version_label="stable").version == 1
        assert backend.classify(SAMPLE_TEXTS[:1], "rnn", version=1).version == 1
        info = next(i for i in backend.models() if i.name == "rnn")
        assert [v.version for v in info.versions] == [1, 2] and info.version_labels == {"stable": 1}
    finally:
        backend.close()


def test_broken_new_version_keeps_the_old_one_serving(writable_model_root):
    root = writable_model_root
    backend = EmbeddedBackend(BackendSettings(model_root=root.path), poll=False)
    try:
        backend.refresh()
        staging = root.staging_dir("rnn")
        (staging / "saved_model.pb").write_bytes(b"not a SavedModel")
        assert root.publish(staging, "rnn") == 2
        backend.refresh()
        assert backend.classify(SAMPLE_TEXTS[:1], "rnn").version == 1
        assert ("rnn", 2) in backend.failures()
        assert backend.ready("rnn")
    finally:
        backend.close()


def test_version_with_broken_warmup_records_is_not_served(writable_model_root):
    """Like TF Serving: warmup records are replayed at load, and a version whose replay fails is refused."""
    root = writable_model_root
    staging = root.staging_dir("rnn")
    shutil.copytree(root.version_dir("rnn", 1), staging, dirs_exist_ok=True)
    (staging / EXTRA_DIR / WARMUP_FILE).write_bytes(b"\x00" * 64)
    assert root.publish(staging, "rnn") == 2
    backend = EmbeddedBackend(BackendSettings(model_root=root.path), poll=False)
    try:
        backend.refresh()
        assert ("rnn", 2) in backend.failures()
        assert backend.classify(SAMPLE_TEXTS[:1], "rnn").version == 1  # nothing older was loaded before
    finally:
        backend.close()


def test_tensorflow_errors_while_scoring_are_domain_errors(writable_model_root):
    assert publish_numeric_model(writable_model_root) == 1
    backend = EmbeddedBackend(BackendSettings(model_root=writable_model_root.path), poll=False)
    try:
        backend.refresh()
        assert backend.classify(["3", "5"], "numeric").probabilities.shape == (2, 46)
        with pytest.raises(InvalidArgument, match=r"'numeric' v1 cannot score .*could not correctly convert string: "
                                                  r"three$"):
            backend.classify(["3", "three"], "numeric")
        with pytest.raises(ResourceExhausted, match=r"'numeric' v1 ran out of resources: OOM when allocating"):
            backend.classify([str(2 ** 60)], "numeric")
        assert backend.classify(["7"], "numeric").version == 1  # the model still serves afterwards
    finally:
        backend.close()


def test_empty_root_is_not_ready_until_a_model_appears(tmp_path, tiny_model_root):
    root = ModelRoot(tmp_path / "models")
    backend = EmbeddedBackend(BackendSettings(model_root=root.path, model_poll_interval_s=0.1))
    try:
        backend.refresh()
        assert not backend.ready()
        staging = root.staging_dir("gru")
        shutil.copytree(Path(tiny_model_root) / "gru" / "1", staging, dirs_exist_ok=True)
        root.publish(staging, "gru")
        wait_for(backend.ready)
        assert backend.classify(SAMPLE_TEXTS[:1], "gru").version == 1
    finally:
        backend.close()


def test_new_version_swapped_in_under_traffic_without_failures(writable_model_root):
    root = writable_model_root
    backend = EmbeddedBackend(BackendSettings(model_root=root.path, model_poll_interval_s=0.1))
    try:
        assert backend.classify(SAMPLE_TEXTS, "rnn").version == 1
        old = backend._served["rnn"][1]
        threads = 4
        with Traffic(lambda: backend.classify(SAMPLE_TEXTS, "rnn", timeout=30).version, threads=threads) as traffic:
            wait_for(lambda: len(traffic.answers) >= 20)
            assert publish_copy(root, "rnn", 1) == 2
            wait_for(lambda: traffic.answers[-1] == 2)
            seen = len(traffic.answers)
            wait_for(lambda: len(traffic.answers) >= seen + 20)
        assert not traffic.failures, traffic.failures[:3]
        assert traffic.answers[0] == 1
        # After the first answer from version 2, only calls already in flight on the other threads
        # can still answer from version 1 (answers land in the order calls end, not start).
        after_swap = traffic.answers[traffic.answers.index(2):]
        assert after_swap.count(1) <= threads - 1, after_swap
        assert backend.classify(SAMPLE_TEXTS, "rnn").version == 2
        assert [v.version for v in next(i for i in backend.models() if i.name == "rnn").versions] == [2]
        with pytest.raises(NotFound):
            backend.classify(SAMPLE_TEXTS[:1], "rnn", version=1)
        assert old.retired and old.in_flight == 0

        def released() -> bool:
            gc.collect()
            return old.loaded_ref() is None

        wait_for(released, 10, "the replaced version to leave memory", step=0.1)
    finally:
        backend.close()


@pytest.mark.integration
def test_importing_backends_does_not_load_tensorflow_and_survives_fork(tiny_model_root):
    """A pre-fork parent (Celery) must stay TF-free; each child builds and uses its own backend."""
    script = f"""
import os, sys
import scoring.backends.embedded, scoring.backends.tfserving
assert "tensorflow.python" not in sys.modules, "tensorflow runtime loaded at import"
pid = os.fork()
if pid == 0:
    from scoring.backends.embedded import EmbeddedBackend
    from scoring.settings import BackendSettings
    backend = EmbeddedBackend(BackendSettings(model_root={str(tiny_model_root)!r}))
    result = backend.classify(["oil prices rise"], "rnn", timeout=120)
    backend.close()
    os._exit(0 if result.probabilities.shape[0] == 1 else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
