"""A pretrained sentence encoder as one more ensemble member: does its signal add to today's pool?

Every model we serve learns from the 8,982 training stories alone (word2vec and the language
model read the corpus' unlabelled stories too).  A sentence encoder pretrained on a billion
sentence pairs (sentence-transformers' ``all-MiniLM-L6-v2``, 6 transformer layers, 384
dimensions) reads text another way.  This trial keeps it frozen: ``embed`` writes each
reuters46 story's mean-pooled embedding (the first 256 word pieces by default; needs torch and
sentence-transformers, which the project does not install), keyed by NEWID::

    python -m bench.sentence_trial embed --encoder DIR --out runs/sentence/minilm.npz

``bench.ensemble_trial --sentence runs/sentence/minilm.npz`` then fits a logistic regression on
the fit split's embeddings (C by 5-fold cross-validation on the fit split) and pools it with the
exported members as an arm of its own, weights fitted on validation like today's.  ``speed``
builds the member as a SavedModel that takes raw text (:func:`encoder_module`; needs
tensorflow-text and safetensors) and times it, alone and pooled with a seed's exported
ensemble, against that ensemble in one run::

    python -m bench.sentence_trial speed --encoder DIR --embeddings runs/sentence/minilm.npz \
        --root runs/all/seed-1
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_CORPUS

C_GRID = (1.0, 10.0, 100.0)
CLS, SEP = "[CLS]", "[SEP]"


def encoder_module(encoder: Path, max_pieces: int):
    """The encoder as TensorFlow ops, text in: tensorflow-text's WordPiece tokenizer on the
    encoder's own vocabulary (lowercased, accents stripped), then BERT's layers with the weights
    of ``model.safetensors``, mean pooling over the pieces and L2 normalisation, as
    sentence-transformers computes them.  What serving the member in a SavedModel would run."""
    import tensorflow as tf
    import tensorflow_text as tf_text
    from safetensors.numpy import load_file

    config = json.loads((encoder / "config.json").read_text())
    weights = {k: tf.constant(v) for k, v in load_file(encoder / "model.safetensors").items()}
    vocab = (encoder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    heads, eps = config["num_attention_heads"], config["layer_norm_eps"]
    width = config["hidden_size"] // heads

    def norm(x, name):
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + eps) * weights[f"{name}.weight"] + weights[f"{name}.bias"]

    def dense(x, name):  # PyTorch keeps a Linear's kernel as [out, in]
        return tf.matmul(x, weights[f"{name}.weight"], transpose_b=True) + weights[f"{name}.bias"]

    def split(x):
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        return tf.transpose(tf.reshape(x, [batch, length, heads, width]), [0, 2, 1, 3])

    class Encoder(tf.Module):
        def __init__(self):
            super().__init__()
            table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                tf.constant(vocab), tf.range(len(vocab), dtype=tf.int64)), default_value=-1)
            self.tokenizer = tf_text.BertTokenizer(table, token_out_type=tf.int64, lower_case=True)
            self.cls, self.sep = vocab.index(CLS), vocab.index(SEP)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, text):
            pieces = self.tokenizer.tokenize(text).merge_dims(-2, -1)[:, :max_pieces - 2]
            rows = pieces.nrows()
            ids = tf.concat([tf.fill([rows, 1], tf.constant(self.cls, tf.int64)), pieces,
                             tf.fill([rows, 1], tf.constant(self.sep, tf.int64))], axis=1)
            mask = tf.cast(tf.ones_like(ids).to_tensor(), tf.float32)
            ids = ids.to_tensor()
            length = tf.shape(ids)[1]
            x = (tf.gather(weights["embeddings.word_embeddings.weight"], ids)
                 + weights["embeddings.position_embeddings.weight"][:length]
                 + weights["embeddings.token_type_embeddings.weight"][0])
            x = norm(x, "embeddings.LayerNorm")
            bias = (1.0 - mask[:, None, None, :]) * -1e9
            for i in range(config["num_hidden_layers"]):
                at = f"encoder.layer.{i}"
                q, k, v = (split(dense(x, f"{at}.attention.self.{n}")) for n in ("query", "key", "value"))
                attention = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / width ** 0.5 + bias)
                context = tf.reshape(tf.transpose(tf.matmul(attention, v), [0, 2, 1, 3]), tf.shape(x))
                x = norm(x + dense(context, f"{at}.attention.output.dense"), f"{at}.attention.output.LayerNorm")
                inner = tf.nn.gelu(dense(x, f"{at}.intermediate.dense"), approximate=False)
                x = norm(x + dense(inner, f"{at}.output.dense"), f"{at}.output.LayerNorm")
            pooled = tf.reduce_sum(x * mask[:, :, None], axis=1) / tf.reduce_sum(mask, axis=1, keepdims=True)
            return tf.math.l2_normalize(pooled, axis=1)

    return Encoder()


def embed(corpus: Path, encoder: Path, out: Path, batch_size: int, max_pieces: int) -> None:
    from sentence_transformers import SentenceTransformer

    from training.dataset import load

    data = load(corpus)
    documents = data.train.documents + data.test.documents
    model = SentenceTransformer(str(encoder), device="cpu")
    model.max_seq_length = max_pieces
    vectors = model.encode([d.text for d in documents], batch_size=batch_size, show_progress_bar=True,
                           convert_to_numpy=True, normalize_embeddings=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, newid=np.array([d.newid for d in documents]), vectors=vectors.astype(np.float32),
             max_seq_length=model.max_seq_length)
    print(f"{len(documents)} stories, {vectors.shape[1]} dimensions, first {model.max_seq_length} word pieces "
          f"-> {out}")


def member(path: Path, fit, splits, n_labels: int, seed: int) -> list[np.ndarray]:
    """Probabilities ``[n, n_labels]`` on each of ``splits`` from a logistic regression on the
    embeddings of ``fit`` (C chosen by cross-validation on ``fit`` alone)."""
    vectors_of, _ = _stored(path)
    model = _regression(vectors_of, fit, seed)
    probs = []
    for split in splits:
        p = np.full((len(split), n_labels), 1e-9)
        p[:, model.classes_] = model.predict_proba(vectors_of(split.documents))
        probs.append(p / p.sum(axis=1, keepdims=True))
    return probs


def _stored(path: Path):
    """What ``embed`` wrote: a function from documents to their vectors, and the word pieces read."""
    stored = np.load(path)
    vectors = stored["vectors"]
    row = {int(i): k for k, i in enumerate(stored["newid"])}
    return (lambda documents: vectors[[row[d.newid] for d in documents]]), int(stored["max_seq_length"])


def _regression(vectors_of, fit, seed: int):
    """The logistic regression fitted on ``fit``'s stored embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    search = GridSearchCV(LogisticRegression(max_iter=3000), {"C": C_GRID}, cv=folds, n_jobs=1)
    with warnings.catch_warnings():  # topics with fewer stories than folds
        warnings.simplefilter("ignore", UserWarning)
        search.fit(vectors_of(fit.documents), fit.y)
    model = search.best_estimator_
    print(f"sentence member, seed {seed}: C {search.best_params_['C']} (cv accuracy {search.best_score_:.4f})",
          flush=True)
    return model


def speed(corpus: Path, encoder: Path, embeddings: Path, root: Path, seed: int, n_texts: int,
          val_fraction: float = 0.1) -> list[tuple[str, float]]:
    """In-process docs/s, in one run, of today's ensemble, the sentence member alone (encoder and
    regression in one SavedModel) and the two pooled (what a six-member ensemble would cost)."""
    import tempfile

    import tensorflow as tf

    from bench.training_bench import docs_per_second
    from training.dataset import load
    from training.ensemble import PRODUCT
    from training.export import write_ensemble_model
    from training.layout import ENSEMBLE, INPUT_KEY, OUTPUT_KEY, SIGNATURE_NAME, ModelRoot

    data = load(corpus)
    fit, _ = data.validation_split(val_fraction, seed)
    vectors_of, max_pieces = _stored(embeddings)
    regression = _regression(vectors_of, fit, seed)
    kernel = np.zeros((regression.coef_.shape[1], len(data.labels)), np.float32)
    bias = np.full(len(data.labels), -1e3, np.float32)
    kernel[:, regression.classes_], bias[regression.classes_] = regression.coef_.T, regression.intercept_
    encode = encoder_module(encoder, max_pieces)

    class Member(tf.Module):
        def __init__(self):
            super().__init__()
            self.encode, self.kernel, self.bias = encode, tf.constant(kernel), tf.constant(bias)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])
        def serve(self, text):
            return {OUTPUT_KEY: tf.nn.softmax(tf.matmul(self.encode(text), self.kernel) + self.bias)}

    layout = ModelRoot(root)
    ensemble = layout.version_dir(ENSEMBLE, layout.latest(ENSEMBLE))
    texts = data.test.texts()[:n_texts]
    want = vectors_of(data.test.documents[:n_texts])
    got = np.concatenate([encode(texts[i:i + 64]).numpy() for i in range(0, len(texts), 64)])
    print(f"in-graph encoder against sentence-transformers on {len(texts)} test stories: lowest cosine "
          f"{float((got * want).sum(axis=1).min()):.7f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        alone, pooled = Path(tmp) / "sentence", Path(tmp) / "pooled"
        module = Member()
        tf.saved_model.save(module, str(alone), signatures={SIGNATURE_NAME: module.serve})
        write_ensemble_model(pooled, [ensemble, alone], weights=[0.5, 0.5], pooling=PRODUCT)
        rates = docs_per_second([ensemble, alone, pooled], texts)
    return list(zip(("ensemble (today)", "sentence member", "ensemble + sentence member"), rates, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("embed", help="write each story's embedding")
    run.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    run.add_argument("--encoder", type=Path, required=True, help="a sentence-transformers model folder")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--max-pieces", type=int, default=256, help="word pieces read per story, [CLS] and [SEP] included")
    timed = sub.add_parser("speed", help="in-process docs/s of the member and the pool against today's ensemble")
    timed.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    timed.add_argument("--encoder", type=Path, required=True)
    timed.add_argument("--embeddings", type=Path, required=True, help="what embed wrote")
    timed.add_argument("--root", type=Path, required=True, help="a seed's model root holding the ensemble")
    timed.add_argument("--seed", type=int, default=1)
    timed.add_argument("--texts", type=int, default=512, help="test texts timed")
    args = parser.parse_args(argv)
    if args.command == "embed":
        embed(args.corpus, args.encoder, args.out, args.batch_size, args.max_pieces)
        return 0
    rates = speed(args.corpus, args.encoder, args.embeddings, args.root, args.seed, args.texts)
    for name, rate in rates:
        print(f"{name}: {rate:.1f} docs/s ({rate / rates[0][1]:.3f}x today's ensemble)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
