"""TensorFlow's own saved_model_cli sees the signature and runs the export on raw text."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # runs TensorFlow's CLI as a subprocess

# The CLI installed with TensorFlow beside this interpreter, whether or not the venv is on PATH.
SAVED_MODEL_CLI = str(Path(sys.executable).with_name("saved_model_cli"))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _cli(*args: str) -> str:
    done = subprocess.run([SAVED_MODEL_CLI, *args], capture_output=True, text=True,
                          timeout=180, env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_show_all_lists_the_serving_signature(tiny_model_root):
    shown = _cli("show", "--dir", str(tiny_model_root / "gru" / "1"), "--all")
    signature = shown.split("signature_def['serving_default']:")[1].split("Method name is")[0]
    assert re.search(r"inputs\['text'\] tensor_info:\s+dtype: DT_STRING\s+shape: \(-1\)", signature)
    assert re.search(r"outputs\['probabilities'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1, 46\)",
                     signature)


def test_run_prints_probabilities_for_text(tiny_model_root):
    out = _cli("run", "--dir", str(tiny_model_root / "ensemble" / "1"), "--tag_set", "serve",
               "--signature_def", "serving_default",
               "--input_exprs", 'text=["Cocoa prices rose in Bahia", "Oil output cut"]')
    assert "probabilities" in out
    numbers = [float(x) for x in re.findall(r"\d\.\d+(?:e-?\d+)?", out.split("probabilities", 1)[1])]
    assert len(numbers) == 2 * 46
    assert abs(sum(numbers[:46]) - 1) < 1e-3 and abs(sum(numbers[46:]) - 1) < 1e-3
