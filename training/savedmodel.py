"""Loading an export: ops a SavedModel may use beyond TensorFlow's own are registered first.

The sentence member (training/sentence.py) tokenizes with tensorflow-text's ops, which
TensorFlow knows only once ``tensorflow_text`` is imported; every loader goes through
:func:`load`, so a model that needs them either loads or fails with a line saying what to install.
"""

from __future__ import annotations

from pathlib import Path


class MissingOpsError(RuntimeError):
    """The SavedModel uses ops this process cannot run."""


def load(path: str | Path):
    """``tf.saved_model.load(path)`` with tensorflow-text's ops registered when it is installed."""
    import tensorflow as tf

    try:
        import tensorflow_text  # noqa: F401 -- importing it registers its ops
    except ImportError:
        pass
    try:
        return tf.saved_model.load(str(path))
    except (tf.errors.NotFoundError, RuntimeError) as exc:  # which depends on where the graph is read
        if "Op type not registered" not in str(exc):
            raise
        raise MissingOpsError(f"{path} needs ops this process lacks ({str(exc).splitlines()[0][:200]}); "
                              "install tensorflow-text (the `embedded` extra)") from None
