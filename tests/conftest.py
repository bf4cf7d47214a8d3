"""Shared fixtures: the real corpus and a model root of tiny, really trained and exported models.

``corpus_dir``       Path of the Reuters-21578 folder (env NEWSCLF_CORPUS overrides the default
                     ``../shared/data/reuters21578`` beside the checkout).
``reuters46``        the reuters46 dataset built from it (read once per session).
``tiny_encoder``     a one-layer sentence encoder with random weights, in BERT's files.
``tiny_model_root``  Path of a model root holding ``rnn/1`` and ``gru/1`` (tiny models trained
                     for one epoch on a few hundred documents), ``sentence/1`` (a regression on
                     the tiny encoder, tensorflow-text's ops in its graph) and ``ensemble/1``
                     (the three's average),
                     real SavedModels with the serving signature, labels, metadata, warmup
                     requests, and ``models.config``.  Read-only for tests: copy it to modify.
``writable_model_root``  a private copy of it that a test may publish versions into.
``prediction_server``    the PredictionService test server (tests/support) over the tiny models;
                     ``start_prediction_server`` starts more with options.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.encoders import write_tiny_encoder
from tests.support.prediction_server import PredictionServer

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "reuters21578"
TINY_MODELS = ("rnn", "gru")
TINY_SETTINGS = dict(vocab_size=2000, max_length=40, embedding_dim=16, units=8, epochs=1,
                     batch_size=32, train_limit=400, test_limit=200, patience=0)
TINY_PIECES = 24


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    path = Path(os.environ.get("NEWSCLF_CORPUS", DEFAULT_CORPUS))
    if not path.exists():
        pytest.fail(f"Reuters-21578 corpus not found at {path}; set NEWSCLF_CORPUS")
    return path


@pytest.fixture(scope="session")
def reuters46(corpus_dir):
    from training import dataset
    return dataset.load(corpus_dir)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory, reuters46) -> Path:
    return write_tiny_encoder(tmp_path_factory.mktemp("encoder"), reuters46.train.texts()[:400])


@pytest.fixture(scope="session")
def tiny_model_root(tmp_path_factory, reuters46, tiny_encoder) -> Path:
    from training.export import export_ensemble
    from training.layout import SENTENCE, ModelRoot
    from training.presets import preset
    from training.sentence import train_sentence
    from training.train import train_variant

    root = ModelRoot(tmp_path_factory.mktemp("models"))
    settings = preset("quick", **TINY_SETTINGS)
    for variant in TINY_MODELS:
        train_variant(reuters46, variant, settings, root, preset="tiny", seed=7)
    tiny = settings.model_copy(update={"sentence_encoder": str(tiny_encoder), "sentence_pieces": TINY_PIECES})
    train_sentence(reuters46, tiny, root, preset="tiny", seed=7)
    _, val = reuters46.validation_split(settings.val_fraction, 7)
    export_ensemble(root, [*TINY_MODELS, SENTENCE], labels=reuters46.labels,
                    validation=(val.texts()[:300], val.y[:300]))
    return root.path

@pytest.fixture
def writable_model_root(tiny_model_root, tmp_path):
    """A private copy of the tiny model root that a test may publish versions and labels into."""
    target = tmp_path / "models"
    shutil.copytree(tiny_model_root, target)
    from training.layout import ModelRoot
    return ModelRoot(target)


@pytest.fixture
def start_prediction_server():
    """Factory: ``start_prediction_server(root, **options)`` -> a started PredictionServer."""
    servers: list[PredictionServer] = []

    def start(root, **options) -> PredictionServer:
        path = getattr(root, "path", root)
        server = PredictionServer(path, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace=0)


@pytest.fixture(scope="session")
def prediction_server(tiny_model_root):
    """One protocol double over the read-only tiny model root, shared by the session."""
    with PredictionServer(tiny_model_root) as server:
        yield server
