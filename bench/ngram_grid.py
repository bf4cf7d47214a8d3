"""The n-gram model's settings on validation: features x min_df x C of the linear SVM, over seeds.

Each seed draws its own validation split (as training does); the vocabulary, IDF and SVM come
from the fit split only.  Accuracy is the SVM's argmax (the calibration temperature does not
change it).  Test accuracy is printed beside it for the record, never used to choose.
``word`` are the model's own in-graph features (word 1-2-grams); ``char`` are scikit-learn's
character 2-5-grams within word boundaries (sublinear TF-IDF, L2-normalised), and
``word+char`` both side by side: a trial of whether characters are worth bringing into the
graph::

    python -m bench.ngram_grid --seeds 1,2,3 --min-df 1,2,3,4,6 --c 0.25,0.5,1,2,4,8,16
    python -m bench.ngram_grid --features word,char,word+char --min-df 3 --c 1,4
    python -m bench.ngram_grid --min-df 3 --c 1,2,4,8 --class-weight none,balanced

``--class-weight balanced`` weighs each topic's errors by the inverse of its share of the fit
split (scikit-learn's ``class_weight``): a trial for the rare topics, hence macro-F1 beside
accuracy.  ``--scaling nb`` is NB-SVM (Wang & Manning, 2012): each topic's one-vs-rest SVM sees
the features scaled by that topic's naive-Bayes log-count ratio (over binarised counts,
smoothing 1), fitted on the fit split.  Its
scores are still one linear map of the features (the ratio folds into the weights), so the model
would export as today's::

    python -m bench.ngram_grid --min-df 3 --c 0.25,1,4 --scaling none,nb

``word+title`` adds the title's own 1-2-grams (the text's first line, with a vocabulary and IDF
of their own) beside the words of the whole text, so a headline's words can weigh more than the
same words in the body.  ``--learner softmax`` replaces the SVM with one softmax layer on the same
features trained by Adam (cross-entropy; the best of its passes over the fit split chosen on
validation accuracy)::

    python -m bench.ngram_grid --min-df 3 --c 1,2,4,8 --features word,word+title
    python -m bench.ngram_grid --min-df 3 --c 4 --learner softmax

``--fit-shares`` fits on the first part of the (shuffled) fit split only, vocabulary included: a
learning curve on validation, telling what more training text would be worth (e.g. refitting on
the validation split too, which validation itself cannot judge)::

    python -m bench.ngram_grid --min-df 3 --c 4 --fit-shares 0.5,0.7,0.8,0.9,1

``--folds K`` judges on K stratified folds of the whole training split instead of each seed's
validation split (about 900 documents, too few to tell apart the rare topics behind macro-F1):
every training document is held out once, features and learner fitted on the other folds, and
the held-out predictions of all folds scored together; the seed draws the folds.  The test
figures beside them are the fold models' mean, still never used to choose::

    python -m bench.ngram_grid --folds 5 --min-df 3 --c 1,4 --scaling none,nb --class-weight none,balanced

``--unlabelled`` puts the corpus's stories without a usable topic to work (never validation or
test text): ``idf`` fits the vocabulary and IDF on them beside the fit split; ``pseudo`` fits the
learner, labels each such story it is sure of (top score above 0 and above the runner-up by
each of ``--pseudo-margins``) with its top topic, and fits again on the fit split and those
stories::

    python -m bench.ngram_grid --folds 5 --min-df 3 --c 1 --scaling nb --unlabelled none,idf,pseudo \
        --pseudo-margins 0,0.5,1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_CORPUS, REPO, mean_std, write_rows

FEATURES = ("word", "char", "word+char", "word+title")
LEARNERS = ("svm", "softmax")
# The Adam-trained softmax: full passes over the fit split, the best pass chosen on validation.
SOFTMAX_EPOCHS = 30
SOFTMAX_BATCH = 64
SOFTMAX_RATE = 1e-2
SCALINGS = ("none", "nb")
UNLABELLED = ("none", "idf", "pseudo")
CHAR_NGRAMS = (2, 5)


def _features(kind: str, texts: list[list[str]], min_df: int,
              vocabulary_texts: list[str] | None = None) -> tuple[list, int]:
    """Feature matrices of each list of ``texts`` (the fit split's first), and the number of terms.

    The word vocabulary and IDF come from ``vocabulary_texts`` when given, else from the fit split.
    """
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    from training.ngrams import NGramClassifier, _sparse_rows, fit_vocabulary

    parts, terms = [], 0
    if kind in ("word", "word+char", "word+title"):
        vocabulary, idf = fit_vocabulary(vocabulary_texts or texts[0], min_df)
        layer = NGramClassifier(vocabulary, idf, np.zeros((len(vocabulary), 1)), np.zeros(1))
        parts.append([_sparse_rows(layer.features, t)[:, 1:] for t in texts])
        terms += len(vocabulary)
    if kind == "word+title":
        titles = [[t.split("\n", 1)[0] for t in split] for split in texts]
        vocabulary, idf = fit_vocabulary(titles[0], min_df)
        layer = NGramClassifier(vocabulary, idf, np.zeros((len(vocabulary), 1)), np.zeros(1))
        parts.append([_sparse_rows(layer.features, t)[:, 1:] for t in titles])
        terms += len(vocabulary)
    if kind in ("char", "word+char"):
        chars = TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, sublinear_tf=True, min_df=min_df)
        parts.append([chars.fit_transform(texts[0]), *(chars.transform(t) for t in texts[1:])])
        terms += len(chars.vocabulary_)
    if len(parts) == 1:
        return parts[0], terms
    return [hstack(pair).tocsr() for pair in zip(*parts, strict=True)], terms


def _softmax_regression(x_fit, y_fit, x_val, y_val, n_labels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(weights [terms, labels], biases) of a softmax layer trained by Adam, best pass on validation."""
    import tensorflow as tf

    tf.random.set_seed(seed)
    order = np.random.default_rng(seed)
    kernel = tf.Variable(tf.zeros((x_fit.shape[1], n_labels)))
    bias = tf.Variable(tf.zeros(n_labels))
    optimizer = tf.keras.optimizers.Adam(SOFTMAX_RATE)

    def sparse(x):
        x = x.tocoo()
        return tf.sparse.reorder(tf.SparseTensor(np.c_[x.row, x.col].astype(np.int64), x.data.astype(np.float32),
                                                 x.shape))

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = tf.sparse.sparse_dense_matmul(x, kernel) + bias
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        optimizer.apply_gradients(zip(tape.gradient(loss, [kernel, bias]), [kernel, bias]))

    best = (-1.0, None, None)
    for _ in range(SOFTMAX_EPOCHS):
        shuffled = order.permutation(x_fit.shape[0])
        for start in range(0, len(shuffled), SOFTMAX_BATCH):
            rows = shuffled[start:start + SOFTMAX_BATCH]
            step(sparse(x_fit[rows]), tf.constant(y_fit[rows], tf.int32))
        accuracy = float(np.mean(np.asarray(x_val @ kernel.numpy() + bias.numpy()).argmax(axis=1) == y_val))
        if accuracy > best[0]:
            best = (accuracy, kernel.numpy(), bias.numpy())
    return best[1], best[2]


def _learn(setting: tuple, x_fit, y_fit, x_val, y_val, n_labels: int, seed: int):
    """A function from features to ``[documents, n_labels]`` topic scores: one learner setting fitted
    on ``x_fit`` (a topic missing from ``y_fit`` scores -inf)."""
    from sklearn.svm import LinearSVC

    learner, c, weight, scaling = setting
    if learner == "softmax":
        coef, bias = _softmax_regression(x_fit, y_fit, x_val, y_val, n_labels, seed)
    elif scaling == "nb":
        from training.ngrams import nb_svm

        coef, bias = nb_svm(x_fit, y_fit, n_labels, c=c, seed=seed)
    else:
        svm = LinearSVC(C=c, random_state=seed, class_weight=None if weight == "none" else weight).fit(x_fit, y_fit)

        def scores(x):
            out = np.full((x.shape[0], n_labels), -np.inf)
            out[:, svm.classes_] = svm.decision_function(x)
            return out
        return scores
    return lambda x: np.asarray(x @ coef + bias)


def _predict(setting: tuple, x_fit, y_fit, x_val, y_val, x_test, n_labels: int, seed: int,
             x_unlabelled=None, margin: float = 1.0):
    """(validation, test) predictions of one learner setting fitted on ``x_fit``, and with
    ``x_unlabelled`` fitted again beside the unlabelled texts it is sure of (pseudo-labels)."""
    scores = _learn(setting, x_fit, y_fit, x_val, y_val, n_labels, seed)
    if x_unlabelled is not None:
        from scipy.sparse import vstack

        found = scores(x_unlabelled)
        runner_up, top = np.sort(found, axis=1)[:, -2:].T
        sure = np.flatnonzero((top > 0) & (top - runner_up > margin))
        print(f"pseudo-labelled {len(sure)} of {x_unlabelled.shape[0]} unlabelled texts", file=sys.stderr)
        scores = _learn(setting, vstack([x_fit, x_unlabelled[sure]]).tocsr(), np.r_[y_fit, found[sure].argmax(axis=1)],
                        x_val, y_val, n_labels, seed)
    return tuple(scores(x).argmax(axis=1) for x in (x_val, x_test))


def _settings(cs, class_weights, scalings, learners) -> list[tuple]:
    """(learner, C, class weight, scaling) of every setting asked for (NB-SVM is unweighted)."""
    settings = [("softmax", 0.0, "none", "none")] if "softmax" in learners else []
    if "svm" in learners:
        settings += [("svm", c, w, s) for c in cs for w in class_weights for s in scalings
                     if not (s == "nb" and w != "none")]
    return settings


def _folds(train, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, held-out) indices of each of ``folds`` stratified folds of the training split."""
    import warnings

    from sklearn.model_selection import StratifiedKFold

    with warnings.catch_warnings():  # topics with fewer documents than folds are spread as they can be
        warnings.simplefilter("ignore", UserWarning)
        return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(train)), train.y))


def grid(corpus: Path, seeds: list[int], min_dfs: list[int], cs: list[float], val_fraction: float,
         features: list[str] = ("word",), class_weights: list[str] = ("none",),
         scalings: list[str] = ("none",), learners: list[str] = ("svm",),
         fit_shares: list[float] = (1.0,), folds: int = 0, unlabelled: list[str] = ("none",),
         margins: list[float] = (1.0,)) -> list[dict]:
    from training.dataset import load, texts_of

    data = load(corpus)
    stories = [t for t in texts_of(data.unlabelled) if t.strip()]
    settings = _settings(cs, class_weights, scalings, learners)
    uses = [(u, m) for u in unlabelled for m in (margins if u == "pseudo" else [None])]
    rows = []
    for seed, share in ((s, f) for s in seeds for f in fit_shares):
        if folds:
            parts = [(data.train.take(a), data.train.take(b)) for a, b in _folds(data.train, folds, seed)]
        else:
            parts = [data.validation_split(val_fraction, seed)]
        parts = [(fit.head(max(1, round(share * len(fit)))), val) for fit, val in parts]
        for kind, min_df, (use, margin) in ((k, m, u) for k in features for m in min_dfs for u in uses):
            found = {setting: ([], [], [], []) for setting in settings}  # truth, predicted (val), test predicted, terms
            for fit, val in parts:
                texts = [fit.texts(), val.texts(), data.test.texts()] + ([stories] if use == "pseudo" else [])
                matrices, terms = _features(kind, texts, min_df, texts[0] + stories if use == "idf" else None)
                x_fit, x_val, x_test = matrices[:3]
                x_stories = matrices[3] if use == "pseudo" else None
                for setting in settings:
                    predicted_val, predicted_test = _predict(setting, x_fit, fit.y, x_val, val.y, x_test,
                                                             len(data.labels), seed, x_stories, margin)
                    truth, predicted, tests, sizes = found[setting]
                    truth.append(val.y)
                    predicted.append(predicted_val)
                    tests.append(predicted_test)
                    sizes.append(terms)
            for (learner, c, weight, scaling), (truth, predicted, tests, sizes) in found.items():
                rows.append(_row(seed, kind, learner, scaling, min_df, c, weight, int(np.mean(sizes)),
                                 (np.concatenate(truth), np.concatenate(predicted)),
                                 [(data.test.y, t) for t in tests], share, folds,
                                 f"pseudo (margin {margin:g})" if use == "pseudo" else use))
    return rows


def _row(seed, kind, learner, scaling, min_df, c, weight, terms, val, tests, share, folds=0,
         unlabelled="none") -> dict:
    """One setting's figures, also printed as JSON.

    ``val`` is (truth, predicted) over every held-out document (all folds' together); ``tests``
    is one (truth, predicted) per fitted model, whose test figures are averaged.
    """
    from sklearn.metrics import f1_score

    row = {"seed": seed, "features": kind, "learner": learner, "scaling": scaling, "min_df": min_df, "c": c,
           "class_weight": weight, "fit_share": share, "folds": folds, "unlabelled": unlabelled, "terms": terms}
    y, predicted = val
    row["val_accuracy"] = float(np.mean(predicted == y))
    row["val_macro_f1"] = float(f1_score(y, predicted, average="macro"))
    row["test_accuracy"] = float(np.mean([np.mean(p == t) for t, p in tests]))
    row["test_macro_f1"] = float(np.mean([f1_score(t, p, average="macro") for t, p in tests]))
    print(json.dumps(row), flush=True)
    return row


def _key(row: dict) -> tuple:
    return (row.get("features", "word"), row.get("learner", "svm"), row.get("scaling", "none"), row["min_df"],
            row["c"], row.get("class_weight", "none"), row.get("fit_share", 1.0), row.get("folds", 0),
            row.get("unlabelled", "none"))


def table(rows: list[dict]) -> str:
    columns = ("val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1")
    header = ("| features | learner | scaling | min_df | C | class weight | fit share | folds | unlabelled | "
              "terms (mean) | val accuracy | val macro-F1 | test accuracy | test macro-F1 |")
    lines = [header, "|---|---|---|---:|---:|---|---:|---:|---|---:|---|---|---|---|"]
    for key in sorted({_key(r) for r in rows}):
        mine = [r for r in rows if _key(r) == key]
        kind, learner, scaling, min_df, c, weight, share, folds, use = key
        figures = " | ".join(mean_std([r[k] for r in mine]) if all(k in r for r in mine) else "—" for k in columns)
        terms = np.mean([r["terms"] for r in mine])
        lines.append(f"| {kind} | {learner} | {scaling} | {min_df} | {c:g} | {weight} | {share:g} | "
                     f"{folds or '—'} | {use} | {terms:,.0f} | {figures} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--min-df", default="1,2,3,4,6")
    parser.add_argument("--c", default="0.25,0.5,1,2,4,8,16")
    parser.add_argument("--features", default="word", help=f"comma-separated, of {', '.join(FEATURES)}")
    parser.add_argument("--class-weight", default="none", help="comma-separated, of none, balanced")
    parser.add_argument("--scaling", default="none", help=f"comma-separated, of {', '.join(SCALINGS)}")
    parser.add_argument("--learner", default="svm", help=f"comma-separated, of {', '.join(LEARNERS)}")
    parser.add_argument("--fit-shares", default="1", help="comma-separated shares of the fit split to fit on, "
                                                         "each in (0, 1]")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--folds", type=int, default=0,
                        help="judge on K stratified folds of the whole training split (every training document "
                             "held out once) instead of each seed's validation split; 0: the validation split")
    parser.add_argument("--unlabelled", default="none",
                        help=f"comma-separated, of {', '.join(UNLABELLED)}: what the stories without a usable "
                             "topic are used for")
    parser.add_argument("--pseudo-margins", default="1",
                        help="comma-separated; pseudo-labels: the lead over the runner-up score a story needs "
                             "to be labelled")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ngram-grid.json")
    args = parser.parse_args(argv)
    features = [f for f in args.features.split(",") if f]
    if set(features) - set(FEATURES):
        parser.error(f"unknown features {sorted(set(features) - set(FEATURES))}; choose from {', '.join(FEATURES)}")
    weights = [w for w in args.class_weight.split(",") if w]
    if set(weights) - {"none", "balanced"}:
        parser.error(f"unknown class weights {sorted(set(weights) - {'none', 'balanced'})}; choose none or balanced")
    scalings = [s for s in args.scaling.split(",") if s]
    if set(scalings) - set(SCALINGS):
        parser.error(f"unknown scalings {sorted(set(scalings) - set(SCALINGS))}; choose from {', '.join(SCALINGS)}")
    learners = [x for x in args.learner.split(",") if x]
    if set(learners) - set(LEARNERS):
        parser.error(f"unknown learners {sorted(set(learners) - set(LEARNERS))}; choose from {', '.join(LEARNERS)}")
    shares = [float(f) for f in args.fit_shares.split(",") if f]
    if not shares or any(not 0 < f <= 1 for f in shares):
        parser.error("--fit-shares: each share must be in (0, 1]")
    unlabelled = [u for u in args.unlabelled.split(",") if u]
    if set(unlabelled) - set(UNLABELLED):
        parser.error(f"unknown --unlabelled {sorted(set(unlabelled) - set(UNLABELLED))}; "
                     f"choose from {', '.join(UNLABELLED)}")
    if args.folds == 1 or args.folds < 0:
        parser.error("--folds: 0 (the validation split) or at least 2")
    rows = grid(args.corpus, [int(s) for s in args.seeds.split(",")], [int(m) for m in args.min_df.split(",")],
                [float(c) for c in args.c.split(",")], args.val_fraction, features, weights, scalings, learners,
                shares, args.folds, unlabelled, [float(m) for m in args.pseudo_margins.split(",") if m])
    write_rows(args.out, rows)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
