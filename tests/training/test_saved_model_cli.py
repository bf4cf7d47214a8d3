"""TensorFlow's own saved_model_cli sees the signature and runs the export on raw text."""

from __future__ import annotations

import re

import pytest

from tests.support.saved_model_cli import SAVED_MODEL_CLI, WITH_TEXT_OPS, cli_output, printed_probabilities, run_cli

pytestmark = pytest.mark.integration  # runs TensorFlow's CLI as a subprocess

TEXTS = 'text=["Cocoa prices rose in Bahia", "Oil output cut"]'


def test_show_all_lists_the_serving_signature(tiny_model_root):
    shown = cli_output("show", "--dir", str(tiny_model_root / "gru" / "1"), "--all")
    signature = shown.split("signature_def['serving_default']:")[1].split("Method name is")[0]
    assert re.search(r"inputs\['text'\] tensor_info:\s+dtype: DT_STRING\s+shape: \(-1\)", signature)
    assert re.search(r"outputs\['probabilities'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1, 46\)",
                     signature)


@pytest.mark.parametrize(("model", "command"), [("gru", SAVED_MODEL_CLI), ("sentence", WITH_TEXT_OPS),
                                                ("ensemble", WITH_TEXT_OPS)])
def test_run_prints_probabilities_for_text(tiny_model_root, model, command):
    out = cli_output("run", "--dir", str(tiny_model_root / model / "1"), "--tag_set", "serve",
                     "--signature_def", "serving_default", "--input_exprs", TEXTS, command=command)
    numbers = printed_probabilities(out)
    assert len(numbers) == 2 * 46
    assert abs(sum(numbers[:46]) - 1) < 1e-3 and abs(sum(numbers[46:]) - 1) < 1e-3


def test_plain_cli_names_the_missing_ops(tiny_model_root):
    """Without tensorflow-text's ops the sentence member cannot load: the error says which op."""
    done = run_cli("run", "--dir", str(tiny_model_root / "sentence" / "1"), "--tag_set", "serve",
                   "--signature_def", "serving_default", "--input_exprs", TEXTS)
    assert done.returncode != 0 and "Op type not registered" in done.stderr
