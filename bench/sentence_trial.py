"""A pretrained sentence encoder as one more ensemble member: the trial that chose it.

Since adopted as the ensemble's ``sentence`` member (training/sentence.py; docs/benchmarks.md);
the trial stays to reproduce the choice, and ``reference`` writes the embeddings the parity test
checks the in-graph encoder against.  Before it, every model we served learnt from the 8,982
training stories alone (word2vec and the language model read the corpus' unlabelled stories too).  A sentence encoder pretrained on a billion
sentence pairs (sentence-transformers' ``all-MiniLM-L6-v2``, 6 transformer layers, 384
dimensions) reads text another way.  This trial keeps it frozen: ``embed`` writes each
reuters46 story's mean-pooled embedding (the first 256 word pieces by default; needs torch and
sentence-transformers, which the project does not install), keyed by NEWID::

    python -m bench.sentence_trial embed --encoder DIR --out runs/sentence/minilm.npz

``bench.ensemble_trial --sentence runs/sentence/minilm.npz`` then fits a logistic regression on
the fit split's embeddings (C by 5-fold cross-validation on the fit split) and pools it with the
exported members as an arm of its own, weights fitted on validation like today's.  ``speed``
builds the member as a SavedModel that takes raw text (:mod:`training.sentence`, the encoder as
TensorFlow ops) and times it, alone and pooled with a seed's exported
ensemble, against that ensemble in one run::

    python -m bench.sentence_trial speed --encoder DIR --embeddings runs/sentence/minilm.npz \
        --root runs/all/seed-1
    python -m bench.sentence_trial reference --encoder DIR    # tests/data/minilm_reference.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_CORPUS

# What the parity test (tests/training/test_sentence.py) embeds besides a few test stories.
REFERENCE_TEXTS = ["", "Cocoa prices rose in Bahia after the rains.", "OIL OUTPUT CUT -- opec, 12 mln bpd",
                   "Bundesbank leaves rates unchanged; café ü 1,250.5 dlrs", "zzqx vrrk \u2603"]


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
    """Probabilities ``[n, n_labels]`` on each of ``splits`` from the member's logistic regression
    on the stored embeddings of ``fit`` (C chosen by cross-validation on ``fit`` alone)."""
    from training.sentence import fit_regression, probabilities

    vectors_of, _ = _stored(path)
    kernel, bias, c = fit_regression(vectors_of(fit.documents), fit.y, n_labels, seed)
    print(f"sentence member, seed {seed}: C {c}", flush=True)
    return [probabilities(vectors_of(split.documents), kernel, bias) for split in splits]


def _stored(path: Path):
    """What ``embed`` wrote: a function from documents to their vectors, and the word pieces read."""
    stored = np.load(path)
    vectors = stored["vectors"]
    row = {int(i): k for k, i in enumerate(stored["newid"])}
    return (lambda documents: vectors[[row[d.newid] for d in documents]]), int(stored["max_seq_length"])


def speed(corpus: Path, encoder: Path, embeddings: Path, root: Path, seed: int, n_texts: int,
          val_fraction: float = 0.1) -> list[tuple[str, float]]:
    """In-process docs/s, in one run, of today's ensemble, the sentence member alone (encoder and
    regression in one SavedModel) and the two pooled (what a six-member ensemble would cost)."""
    import tempfile

    from bench.training_bench import docs_per_second
    from training.dataset import load
    from training.ensemble import PRODUCT
    from training.export import write_ensemble_model
    from training.layout import ENSEMBLE, ModelRoot
    from training.sentence import build_encoder, fit_regression, write_sentence_model

    data = load(corpus)
    fit, _ = data.validation_split(val_fraction, seed)
    vectors_of, max_pieces = _stored(embeddings)
    kernel, bias, _ = fit_regression(vectors_of(fit.documents), fit.y, len(data.labels), seed)
    encode = build_encoder(encoder, max_pieces)

    layout = ModelRoot(root)
    ensemble = layout.version_dir(ENSEMBLE, layout.latest(ENSEMBLE))
    texts = data.test.texts()[:n_texts]
    want = vectors_of(data.test.documents[:n_texts])
    got = np.concatenate([encode(texts[i:i + 64]).numpy() for i in range(0, len(texts), 64)])
    print(f"in-graph encoder against sentence-transformers on {len(texts)} test stories: lowest cosine "
          f"{float((got * want).sum(axis=1).min()):.7f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        alone, pooled = Path(tmp) / "sentence", Path(tmp) / "pooled"
        write_sentence_model(alone, encode, kernel, bias, temperature=1.0)
        write_ensemble_model(pooled, [ensemble, alone], weights=[0.5, 0.5], pooling=PRODUCT)
        rates = docs_per_second([ensemble, alone, pooled], texts)
    return list(zip(("ensemble (today)", "sentence member", "ensemble + sentence member"), rates, strict=True))


def reference(corpus: Path, encoder: Path, out: Path, max_pieces: int, stories: int = 3) -> None:
    """Write sentence-transformers' embeddings of :data:`REFERENCE_TEXTS` and the first test
    stories: what the in-graph encoder is checked against where torch is not installed."""
    from sentence_transformers import SentenceTransformer

    from training.dataset import load

    texts = REFERENCE_TEXTS + load(corpus).test.texts()[:stories]
    model = SentenceTransformer(str(encoder), device="cpu")
    model.max_seq_length = max_pieces
    vectors = model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    out.write_text(json.dumps({"encoder": "sentence-transformers/all-MiniLM-L6-v2", "max_pieces": max_pieces,
                               "texts": texts, "vectors": np.round(vectors, 7).tolist()}) + "\n", encoding="utf-8")
    print(f"{len(texts)} texts -> {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("embed", help="write each story's embedding")
    run.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    run.add_argument("--encoder", type=Path, required=True, help="a sentence-transformers model folder")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--max-pieces", type=int, default=256, help="word pieces read per story, [CLS] and [SEP] included")
    ref = sub.add_parser("reference", help="write the parity test's reference embeddings")
    ref.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ref.add_argument("--encoder", type=Path, required=True)
    ref.add_argument("--out", type=Path, default=Path("tests") / "data" / "minilm_reference.json")
    ref.add_argument("--max-pieces", type=int, default=64)
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
    if args.command == "reference":
        reference(args.corpus, args.encoder, args.out, args.max_pieces)
        return 0
    rates = speed(args.corpus, args.encoder, args.embeddings, args.root, args.seed, args.texts)
    for name, rate in rates:
        print(f"{name}: {rate:.1f} docs/s ({rate / rates[0][1]:.3f}x today's ensemble)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
