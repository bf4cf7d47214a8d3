"""Changing a model root the way an export does, for tests that roll out versions."""

from __future__ import annotations

import shutil

from training.layout import ModelRoot


def publish_copy(root: ModelRoot, model: str, version: int) -> int:
    """Publish a copy of ``model``/``version`` as the next version (staging + atomic rename)."""
    staging = root.staging_dir(model)
    shutil.copytree(root.version_dir(model, version), staging, dirs_exist_ok=True)
    return root.publish(staging, model)


SAMPLE_TEXTS = [
    "Crude oil prices rose sharply after OPEC agreed to cut production quotas.",
    "The company reported net profit of 12 mln dlrs, up from 9 mln dlrs a year earlier.",
    "Wheat and corn exports fell as the U.S. Agriculture Department cut its forecasts.",
    "Bundesbank leaves interest rates unchanged; the mark firms against the dollar — café ü.",
]


def saved_model_probabilities(root: ModelRoot, model: str, version: int, texts: list[str]):
    """Probabilities from calling the exported signature directly, the reference for backends."""
    import tensorflow as tf

    from training.layout import INPUT_KEY, OUTPUT_KEY, SIGNATURE_NAME

    loaded = tf.saved_model.load(str(root.version_dir(model, version)))
    output = loaded.signatures[SIGNATURE_NAME](**{INPUT_KEY: tf.constant(texts)})
    return output[OUTPUT_KEY].numpy()
