"""TensorFlow's threads per model call: the gateway gives each concurrent call its share of the
cores, and the embedded backend runs with the number it was given."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scoring.cores import available_cores
from service.settings import GatewaySettings
from tests.support.processes import REPO


@pytest.mark.parametrize("concurrency", [1, 2, 64])
def test_each_concurrent_call_gets_its_share_of_the_cores(monkeypatch, concurrency):
    monkeypatch.delenv("NEWSCLF_TF_INTRA_OP_THREADS", raising=False)
    settings = GatewaySettings(batch_concurrency=concurrency)
    assert settings.tf_intra_op_threads == max(1, available_cores() // concurrency)


@pytest.mark.parametrize(("processes", "given", "calls"), [(1, None, 2), (2, None, 1), (4, None, 1), (2, 3, 3)])
def test_calls_per_model_default_to_one_per_process_when_there_are_several(monkeypatch, processes, given, calls):
    monkeypatch.delenv("NEWSCLF_BATCH_CONCURRENCY", raising=False)
    assert GatewaySettings(grpc_processes=processes, batch_concurrency=given).batch_concurrency == calls


@pytest.mark.parametrize("processes", [2, 3])
def test_the_cores_are_shared_among_every_grpc_process_calls(monkeypatch, processes):
    monkeypatch.delenv("NEWSCLF_TF_INTRA_OP_THREADS", raising=False)
    settings = GatewaySettings(batch_concurrency=1, grpc_processes=processes)
    assert settings.tf_intra_op_threads == max(1, available_cores() // processes)


@pytest.mark.parametrize("value", ["0", "3"])
def test_a_number_from_the_environment_is_kept(monkeypatch, value):
    monkeypatch.setenv("NEWSCLF_TF_INTRA_OP_THREADS", value)
    assert GatewaySettings().tf_intra_op_threads == int(value)


SCRIPT = """
import sys
import tensorflow as tf
from scoring.backends.embedded import EmbeddedBackend
from scoring.settings import BackendSettings
backend = EmbeddedBackend(BackendSettings(model_root=sys.argv[1], tf_intra_op_threads=int(sys.argv[2])), poll=False)
backend.refresh()
assert backend.classify(["Wheat exports rose"], "gru").probabilities.shape[0] == 1
print("threads", tf.config.threading.get_intra_op_parallelism_threads())
backend.close()
"""


@pytest.mark.integration
@pytest.mark.parametrize("threads", [1, 0])
def test_the_embedded_backend_runs_with_the_threads_it_was_given(tiny_model_root, threads):
    # A process of its own: TensorFlow fixes the number when its runtime starts.
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_model_root), str(threads)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"threads {threads}" in done.stdout.splitlines()
