"""Language-model pre-training of a variant's embedding and recurrent layer on the corpus's own text.

Word2vec teaches the embedding which words behave alike; a language model also teaches the
recurrent layer to carry context along a story.  Each variant's embedding and recurrent layer
are trained to predict the next token (for ``bilstm`` the forward LSTM the next token and the
backward LSTM the previous one, as the two directions read the text) on the fit split and the
stories without a usable topic -- never validation or test text.  The classifier then starts
from these weights and is fine-tuned on the topics, either every layer at once or, with
``lm_unfreeze_epochs``, unfrozen from the top down (ULMFiT's gradual unfreezing) so the untrained
head does not wash out what pre-training taught before it has learnt anything itself.

Only the most frequent ids are predicted (the rest share one class) and only the first
``LM_LENGTH`` tokens of each story (at most the classifier's ``max_length``) are read, which keeps
an epoch within minutes on a CPU.  Results are kept in ``cache_dir`` (``lm-<key>.npz``, keyed by
vocabulary, texts, variant, settings and seed) and reproducible from the seed.  In every trial so
far (the quick preset, and gru with the default preset over 3 seeds, with and without gradual
unfreezing) it lowered validation accuracy (docs/benchmarks.md), so no preset turns it on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np

from training.embeddings import save_array
from training.models import TextEncoder, recurrent_layer
from training.presets import TrainSettings

LM_OUTPUTS = 2000
LM_LENGTH = 128
BATCH_SIZE = 64
LEARNING_RATE = 2e-3

_memo: dict[str, dict[str, list[np.ndarray]]] = {}


def cache_key(vocabulary: list[str], texts: list[str], variant: str, settings: TrainSettings,
              seed: int, embeddings: np.ndarray | None) -> str:
    """What the pre-trained weights depend on, as one hex digest."""
    shape = (variant, settings.embedding_dim, settings.units, settings.lm_epochs, seed,
             LM_OUTPUTS, _length(settings), BATCH_SIZE, LEARNING_RATE)
    digest = hashlib.sha256(repr(shape).encode())
    for part in (vocabulary, texts):
        digest.update("\0".join(part).encode())
        digest.update(b"\1")
    if embeddings is not None:
        digest.update(np.ascontiguousarray(embeddings).tobytes())
    return digest.hexdigest()


def _length(settings: TrainSettings) -> int:
    return min(LM_LENGTH, settings.max_length)


def _sequences(encoder: TextEncoder, texts: list[str], length: int, backwards: bool
               ) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, next-token classes), ``[n, length]`` each, 0 where there is no token."""
    rows = [row[:length + 1] for row in encoder.token_ids(texts) if len(row) > 1]
    x = np.zeros((len(rows), length), np.int32)
    y = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        if backwards:
            row = row[::-1]
        x[i, :len(row) - 1] = row[:-1]
        y[i, :len(row) - 1] = np.minimum(row[1:], LM_OUTPUTS - 1)
    return x, y


def _build(variant: str, settings: TrainSettings, vocab_size: int, embeddings: np.ndarray | None):
    """The language model and, by direction, the recurrent layers whose weights the classifier takes."""
    init = "uniform" if embeddings is None else keras.initializers.Constant(embeddings)
    embedding = keras.layers.Embedding(vocab_size, settings.embedding_dim, mask_zero=True,
                                       embeddings_initializer=init, name="embedding")
    head = keras.layers.Dense(LM_OUTPUTS, activation="softmax", name="next_token")
    kinds = ["lstm", "lstm"] if variant == "bilstm" else [variant]
    inputs, outputs, layers = [], [], []
    for direction, kind in zip(("forward", "backward"), kinds):
        ids = keras.Input(shape=(_length(settings),), dtype="int32", name=f"{direction}_ids")
        layer = recurrent_layer(kind, settings.units, return_sequences=True, name=f"{direction}_{kind}")
        inputs.append(ids)
        outputs.append(head(layer(embedding(ids))))
        layers.append(layer)
    return keras.Model(inputs, outputs, name=f"{variant}_lm"), embedding, layers


def pretrain_encoder(encoder: TextEncoder, texts: list[str], variant: str, settings: TrainSettings,
                     seed: int, embeddings: np.ndarray | None = None,
                     cache_dir: Path | None = None) -> dict[str, list[np.ndarray]]:
    """Pre-trained weights ``{"embedding": [...], "recurrent": [...]}`` for ``variant``'s classifier.

    ``texts`` must hold training-side text only (the fit split and unlabelled stories);
    ``embeddings`` is the embedding's start (e.g. word2vec), uniform random when None.
    """
    key = cache_key(encoder.vectorizer.get_vocabulary(), texts, variant, settings, seed, embeddings)
    if key in _memo:
        return _memo[key]
    cached = None if cache_dir is None else Path(cache_dir) / f"lm-{key}.npz"
    if cached is not None and cached.is_file():
        with np.load(cached) as stored:
            weights = {part: [stored[f"{part}_{i}"] for i in range(int(stored[f"{part}_n"]))]
                       for part in ("embedding", "recurrent")}
        _memo[key] = weights
        return weights

    keras.utils.set_random_seed(seed)
    model, embedding, layers = _build(variant, settings, encoder.vocabulary_size(), embeddings)
    data = [_sequences(encoder, texts, _length(settings), backwards) for backwards in (False, True)[:len(layers)]]
    xs, ys = [x for x, _ in data], [y for _, y in data]
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE, clipnorm=1.0),
                  loss=["sparse_categorical_crossentropy"] * len(layers))
    model.fit(xs, ys, sample_weight=[(y > 0).astype(np.float32) for y in ys], epochs=settings.lm_epochs,
              batch_size=BATCH_SIZE, shuffle=True, verbose=0)
    weights = {"embedding": embedding.get_weights(),
               "recurrent": [w for layer in layers for w in layer.get_weights()]}
    _memo[key] = weights
    if cached is not None:
        arrays = {f"{part}_{i}": w for part, ws in weights.items() for i, w in enumerate(ws)}
        arrays.update({f"{part}_n": np.array(len(ws)) for part, ws in weights.items()})
        save_array(cached, arrays)
    return weights


def unfreezing_stages(variant: str, settings: TrainSettings) -> list[tuple[tuple[str, ...], int]]:
    """Gradual unfreezing as ``(layers kept frozen, epoch the stage ends at)``, in order.

    One stage with nothing frozen unless pre-training ran and ``lm_unfreeze_epochs`` is set;
    stages past ``settings.epochs`` are cut, so a short run may end with layers still frozen.
    """
    k = settings.lm_unfreeze_epochs if settings.lm_epochs else 0
    planned = [(("embedding", variant), k), (("embedding",), 2 * k)] if k else []
    stages, started_at = [], 0
    for frozen, end in [*planned, ((), settings.epochs)]:
        end = min(end, settings.epochs)
        if end > started_at:
            stages.append((frozen, end))
            started_at = end
    return stages


def load_into(classifier: keras.Model, variant: str, weights: dict[str, list[np.ndarray]]) -> None:
    """Start ``classifier`` (from :func:`training.models.build_classifier`) from pre-trained weights."""
    classifier.get_layer("embedding").set_weights(weights["embedding"])
    classifier.get_layer(variant).set_weights(weights["recurrent"])
