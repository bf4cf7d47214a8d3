"""Changing a model root the way an export does, for tests that roll out versions."""

from __future__ import annotations

import shutil

from training.layout import EXTRA_DIR, INPUT_KEY, LABELS_FILE, METADATA_FILE, OUTPUT_KEY, SIGNATURE_NAME, ModelRoot
from training.savedmodel import load as load_savedmodel


def publish_copy(root: ModelRoot, model: str, version: int) -> int:
    """Publish a copy of ``model``/``version`` as the next version (staging + atomic rename)."""
    staging = root.staging_dir(model)
    shutil.copytree(root.version_dir(model, version), staging, dirs_exist_ok=True)
    return root.publish(staging, model)


def publish_numeric_model(root: ModelRoot) -> int:
    """``numeric`` v1: a real SavedModel with the serving signature whose graph reads each text as
    a size and allocates that many floats, so TensorFlow itself fails on a text that is not a
    number (InvalidArgumentError) and on a size no machine can allocate (ResourceExhaustedError)."""
    import tensorflow as tf

    n_labels = len(root.read_labels("rnn", 1))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])
    def serve(text):
        sizes = tf.strings.to_number(text, tf.int64)
        scratch = tf.fill(tf.reshape(tf.reduce_max(sizes), [1]), 1.0)
        uniform = tf.fill(tf.stack([tf.size(text), n_labels]), 1.0 / n_labels)
        return {OUTPUT_KEY: uniform + 0.0 * tf.reduce_sum(scratch)}

    staging = root.staging_dir("numeric")
    tf.saved_model.save(tf.Module(), str(staging), signatures={SIGNATURE_NAME: serve})
    (staging / EXTRA_DIR).mkdir()
    shutil.copy(root.version_dir("rnn", 1) / EXTRA_DIR / LABELS_FILE, staging / EXTRA_DIR / LABELS_FILE)
    metadata = root.read_metadata("rnn", 1).model_copy(update={"model": "numeric"})
    (staging / EXTRA_DIR / METADATA_FILE).write_text(metadata.model_dump_json(), encoding="utf-8")
    return root.publish(staging, "numeric")


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

    loaded = load_savedmodel(root.version_dir(model, version))
    output = loaded.signatures[SIGNATURE_NAME](**{INPUT_KEY: tf.constant(texts)})
    return output[OUTPUT_KEY].numpy()


def graph_ops(saved_model_dir) -> set[str]:
    """Every op type in a SavedModel's graph and function library, read without loading it."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    ops = set()
    for graph in proto.meta_graphs:
        ops |= {node.op for node in graph.graph_def.node}
        ops |= {node.op for fn in graph.graph_def.library.function for node in fn.node_def}
    return ops
