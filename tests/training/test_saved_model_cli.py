"""TensorFlow's own saved_model_cli sees the signature and runs the export on raw text.

A model holding the sentence member (its tokenizer is tensorflow-text's ops) runs once those
ops are registered: saved_model_cli's own entry point, in a Python that imported tensorflow_text.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # runs TensorFlow's CLI as a subprocess

# The CLI installed with TensorFlow beside this interpreter, whether or not the venv is on PATH.
SAVED_MODEL_CLI = [str(Path(sys.executable).with_name("saved_model_cli"))]
RUNNER = "import sys, tensorflow_text; from tensorflow.python.tools.saved_model_cli import main; sys.exit(main())"
WITH_TEXT_OPS = [sys.executable, "-c", RUNNER]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
TEXTS = 'text=["Cocoa prices rose in Bahia", "Oil output cut"]'


def _cli(*args: str, command: list[str] = SAVED_MODEL_CLI) -> str:
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=180, env=ENV, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _probabilities(out: str) -> list[float]:
    assert "probabilities" in out
    return [float(x) for x in re.findall(r"\d\.\d+(?:e-?\d+)?", out.split("probabilities", 1)[1])]


def test_show_all_lists_the_serving_signature(tiny_model_root):
    shown = _cli("show", "--dir", str(tiny_model_root / "gru" / "1"), "--all")
    signature = shown.split("signature_def['serving_default']:")[1].split("Method name is")[0]
    assert re.search(r"inputs\['text'\] tensor_info:\s+dtype: DT_STRING\s+shape: \(-1\)", signature)
    assert re.search(r"outputs\['probabilities'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1, 46\)",
                     signature)


@pytest.mark.parametrize(("model", "command"), [("gru", SAVED_MODEL_CLI), ("sentence", WITH_TEXT_OPS),
                                                ("ensemble", WITH_TEXT_OPS)])
def test_run_prints_probabilities_for_text(tiny_model_root, model, command):
    out = _cli("run", "--dir", str(tiny_model_root / model / "1"), "--tag_set", "serve",
               "--signature_def", "serving_default", "--input_exprs", TEXTS, command=command)
    numbers = _probabilities(out)
    assert len(numbers) == 2 * 46
    assert abs(sum(numbers[:46]) - 1) < 1e-3 and abs(sum(numbers[46:]) - 1) < 1e-3


def test_plain_cli_names_the_missing_ops(tiny_model_root):
    """Without tensorflow-text's ops the sentence member cannot load: the error says which op."""
    done = subprocess.run([*SAVED_MODEL_CLI, "run", "--dir", str(tiny_model_root / "sentence" / "1"), "--tag_set",
                           "serve", "--signature_def", "serving_default", "--input_exprs", TEXTS],
                          capture_output=True, text=True, timeout=180, env=ENV, check=False)
    assert done.returncode != 0 and "Op type not registered" in done.stderr
