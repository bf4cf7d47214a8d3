"""What character n-grams inside the n-gram model would cost a hybrid in serving speed.

On 5-fold cross-validation (``bench.ngram_grid --folds 5 --features word,word+char --scaling nb``)
scikit-learn's character 2-5-grams within word boundaries (``char_wb``), beside the words, raised
the NB-SVM's accuracy by +0.0020 on every seed.  Serving them means cutting each text into those
n-grams inside the graph.  This trial builds that in TensorFlow (:func:`char_wb_ngrams`), checks
it makes exactly scikit-learn's terms (so the cross-validated figures are this model's), fits the
character vocabulary and IDF on one seed's fit split, and exports two n-gram models, words alone
(today's, fitted as ``train`` fits it) and words + characters (the character block's weights are
random: they cost the same as fitted ones).  Each is pooled with each recurrent variant already
exported under ``--state`` into a hybrid SavedModel built as ``train`` builds them, and every model
is timed in one run, in process, interleaved (``bench.training_bench.docs_per_second``)::

    python -m bench.char_ngram_trial --seed 1 --state runs/bench
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_CORPUS
from bench.report import write_section

CHAR_NGRAMS = (2, 5)
CHECKED_TEXTS = 2000
HYBRID_WEIGHTS = [0.5, 0.5]  # the pooled graph costs the same whatever the weights


def char_wb_ngrams(text):
    """Character 2-5-grams of each whitespace-separated word, padded with one space each side:
    scikit-learn's ``char_wb`` analyzer (lowercased) as TensorFlow ops, ragged ``[batch, None]``."""
    import tensorflow as tf

    words = tf.strings.split(tf.strings.lower(text, encoding="utf-8"))
    padded = tf.ragged.map_flat_values(lambda w: tf.strings.join([" ", w, " "]), words)
    chars = tf.strings.unicode_split(padded, "UTF-8")
    widths = tuple(range(CHAR_NGRAMS[0], CHAR_NGRAMS[1] + 1))
    return tf.strings.ngrams(chars, ngram_width=widths, separator="").merge_dims(-2, -1)


def mismatches(texts: list[str]) -> int:
    """How many of ``texts`` get other terms (or counts) in the graph than from scikit-learn."""
    import tensorflow as tf
    from sklearn.feature_extraction.text import CountVectorizer

    analyzer = CountVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS).build_analyzer()
    found = char_wb_ngrams(tf.constant(texts)).to_list()
    return sum(Counter(analyzer(t)) != Counter(g.decode("utf-8") for g in grams) for t, grams in zip(texts, found))


def _word_and_char_model(words, chars):
    """The n-gram model with a character block: ``softmax(word scores + character scores)``."""
    import keras
    import tensorflow as tf

    class WordAndChars(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.words, self.chars = words, chars

        def call(self, text):
            return tf.nn.softmax(self.words.scores(text) + self.chars.scores(text), axis=-1)

    model = WordAndChars()
    model(tf.constant([""]))  # built, so it can be exported
    return model


def trial(corpus: Path, state: Path, seed: int, out: Path) -> tuple[list[dict], dict]:
    import tensorflow as tf

    from bench.training_bench import docs_per_second
    from training.dataset import load
    from training.ensemble import PRODUCT
    from training.export import write_ensemble_model
    from training.layout import NGRAM, VARIANTS, ModelRoot
    from training.ngrams import NGramClassifier, fit_ngram_classifier, fit_vocabulary, write_ngram_model
    from training.presets import preset
    from training.train import hybrid_name

    data = load(corpus)
    settings = preset("default")
    fit, _ = data.validation_split(settings.val_fraction, seed)
    texts = fit.texts(settings.text)
    facts = {"seed": seed, "mismatches": mismatches(texts[:CHECKED_TEXTS]), "checked": min(CHECKED_TEXTS, len(texts))}
    words = fit_ngram_classifier(texts, fit.y, len(data.labels), min_df=settings.ngram_min_df, c=settings.ngram_c,
                                 seed=seed, learner=settings.ngram_learner)
    vocabulary, idf = fit_vocabulary(texts, settings.ngram_min_df, split=char_wb_ngrams)
    random = np.random.default_rng(seed).normal(0.0, 0.1, (len(vocabulary), len(data.labels)))
    chars = NGramClassifier(vocabulary, idf, random, np.zeros(len(data.labels)), split=char_wb_ngrams)
    chars.build((None,))
    facts.update(word_terms=len(words.idf.numpy()) - 1, char_terms=len(vocabulary))
    sample = data.test.texts()[:512]
    facts.update(char_per_text=float(np.mean(char_wb_ngrams(tf.constant(sample)).row_lengths())),
                 word_per_text=float(tf.sparse.reduce_sum(words.vectorizer(tf.constant(sample))).numpy() / len(sample)))
    root = ModelRoot(state / f"seed-{seed}")
    variants = [v for v in VARIANTS if root.latest(v) is not None]
    rows = []
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        models = {"words": Path(tmp) / "words", "words+chars": Path(tmp) / "words-chars"}
        write_ngram_model(models["words"], words)
        write_ngram_model(models["words+chars"], _word_and_char_model(words, chars))
        paths = [models["words"], models["words+chars"]]
        for variant in variants:
            pure = root.version_dir(variant, root.latest(variant))
            hybrids = []
            for kind, ngram in models.items():
                hybrids.append(Path(tmp) / f"{hybrid_name(variant)}-{kind}")
                write_ensemble_model(hybrids[-1], [pure, ngram], 1.0, HYBRID_WEIGHTS, PRODUCT)
            paths += [pure, *hybrids]
        rates = docs_per_second(paths, sample)
    facts.update(ngram_words=rates[0], ngram_both=rates[1])
    for i, variant in enumerate(variants):
        pure, with_words, with_both = rates[2 + 3 * i: 5 + 3 * i]
        rows.append({"variant": variant, "pure": pure, "words": with_words, "both": with_both})
    print(f"{NGRAM}: {facts}", flush=True)
    return rows, facts


def markdown(rows: list[dict], facts: dict, command: str) -> str:
    lines = ["## Character n-grams in the n-gram model: serving cost", "",
             (f"Command: `{command}` (nothing else running).  The in-graph character 2-5-grams made "
             f"scikit-learn's `char_wb` terms exactly on {facts['checked'] - facts['mismatches']:,} of "
             f"{facts['checked']:,} training texts, so the cross-validated accuracy figures (\"what was tried\") are "
             f"this model's.  Vocabulary (min_df 3, seed-{facts['seed']} fit split): {facts['word_terms']:,} word terms, "
             f"{facts['char_terms']:,} character terms; a test text makes {facts['word_per_text']:,.0f} word 1-2-grams "
             f"and {facts['char_per_text']:,.0f} character n-grams on average.  The n-gram model alone: "
             f"{facts['ngram_words']:,.0f} docs/s with words, {facts['ngram_both']:,.0f} with words and "
             f"characters.  In-process docs/s, batch 64, 512 test texts, median of 3 interleaved rounds:"), "",
             "| hybrid | pure variant | with today's n-gram model | ratio | with words + characters | ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']}-ngram | {r['pure']:,.0f} | {r['words']:,.0f} | {r['words'] / r['pure']:.2f}× | "
                     f"{r['both']:,.0f} | {r['both'] / r['pure']:.2f}× |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import shlex

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--state", type=Path, default=Path("runs") / "bench",
                        help="the training benchmark's per-seed model roots (recurrent variants exported there)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("runs"), help="where the trial's models are written "
                                                                        "(removed afterwards)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    command = "python -m bench.char_ngram_trial " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    args.work.mkdir(parents=True, exist_ok=True)
    rows, facts = trial(args.corpus, args.state, args.seed, args.work)
    text = markdown(rows, facts, command)
    if not args.no_write:
        write_section("char-ngram-cost", text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
