"""TensorFlow's own saved_model_cli, run as a subprocess the way a user runs it.

A model holding the sentence member (its tokenizer is tensorflow-text's ops) runs once those ops
are registered: saved_model_cli's own entry point, in a Python that imported tensorflow_text.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

# The CLI installed with TensorFlow beside this interpreter, whether or not the venv is on PATH.
SAVED_MODEL_CLI = [str(Path(sys.executable).with_name("saved_model_cli"))]
RUNNER = "import sys, tensorflow_text; from tensorflow.python.tools.saved_model_cli import main; sys.exit(main())"
WITH_TEXT_OPS = [sys.executable, "-c", RUNNER]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def run_cli(*args: str, command: list[str] = SAVED_MODEL_CLI) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=180, env=ENV, check=False)


def cli_output(*args: str, command: list[str] = SAVED_MODEL_CLI) -> str:
    """What the CLI printed; it must have succeeded."""
    done = run_cli(*args, command=command)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def printed_probabilities(out: str) -> list[float]:
    """The numbers ``saved_model_cli run`` printed after ``probabilities``."""
    assert "probabilities" in out
    return [float(x) for x in re.findall(r"\d\.\d*(?:e[-+]?\d+)?", out.split("probabilities", 1)[1])]
