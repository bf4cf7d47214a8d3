"""Trial: the recurrent and n-gram branches joined before one softmax, over seeds.

Today's hybrids pool two separately trained models' probabilities (``<variant>-ngram``, a
weighted geometric mean fitted on validation).  Here the recurrent branch is trained *with*
the n-gram model: its logits are ``dense(recurrent features) + a * svm_scores``, the SVM
fixed and ``a`` learnt, so the recurrent layers spend their capacity on what the SVM gets
wrong.  The SVM fits its own training texts almost perfectly, so the scores it sees while
training are out-of-fold (5 folds of the fit split, each SVM fitted on the other four);
validation and test see the SVM fitted on the whole fit split, as the served ``ngram`` is.

Each seed's reference comes from ``train --variant V`` and ``train --variant ngram`` exported
into ``--roots`` (``{seed}`` in it); the trial trains the joint model in memory with the same
settings, split, vocabulary and word2vec start (cached).  Arms, all chosen on validation:
``V`` alone, ``V-ngram`` (today's hybrid: pooled exports), ``joint`` (temperature fitted on
validation) and ``joint-ngram`` (the joint model pooled again with the n-gram model)::

    python -m bench.joint_trial --variant gru --roots 'runs/joint/seed-{seed}'
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_CORPUS, REPO, write_rows
from bench.ensemble_trial import _both, _pool, _probs, _softmax, table

FOLDS = 5
# Out-of-fold SVMs give -30 to topics missing from their four folds; the served one rarely
# leaves ±2, so scores are clipped to keep a missing topic from ruling a training text out.
SCORE_CLIP = 3.0


def _svm_scores(classifier, texts: list[str], batch_size: int = 512) -> np.ndarray:
    import tensorflow as tf

    parts = [classifier.scores(tf.constant(texts[i:i + batch_size])).numpy()
             for i in range(0, len(texts), batch_size)]
    return np.clip(np.concatenate(parts), -SCORE_CLIP, SCORE_CLIP)


def out_of_fold_scores(texts: list[str], y: np.ndarray, n_labels: int, settings, seed: int) -> np.ndarray:
    """Each fit text's SVM scores from an SVM fitted on the other folds (vocabulary included)."""
    from sklearn.model_selection import StratifiedKFold

    from training.ngrams import fit_ngram_classifier

    scores = np.zeros((len(texts), n_labels), np.float32)
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # rare topics have fewer fit documents than folds: spread as far as they go
        warnings.simplefilter("ignore", UserWarning)
        splits = list(folds.split(np.zeros(len(y)), y))
    for train, held in splits:
        svm = fit_ngram_classifier([texts[i] for i in train], y[train], n_labels,
                                   min_df=settings.ngram_min_df, c=settings.ngram_c, seed=seed,
                                   learner=settings.ngram_learner)
        scores[held] = _svm_scores(svm, [texts[i] for i in held])
    return scores


def build_joint(variant: str, settings, n_labels: int, vocab_size: int, embeddings, scale: float):
    """``softmax(dense(recurrent features) + a * svm_scores)``, ``a`` trainable from ``scale``."""
    import keras

    from training.models import build_classifier

    recurrent = build_classifier(variant, settings, n_labels, vocab_size, embeddings)
    features = recurrent.get_layer("dropout").output if settings.dropout else recurrent.layers[-2].output
    scores = keras.Input(shape=(n_labels,), name="svm_scores")
    logits = keras.layers.Dense(n_labels, name="topics_logits")(features)
    offset = keras.layers.Dense(1, use_bias=False, kernel_initializer=keras.initializers.Constant(scale),
                                name="svm_scale")
    # one shared scale for every topic: a [1]-kernel applied to each score
    scaled = keras.layers.Reshape((n_labels,))(offset(keras.layers.Reshape((n_labels, 1))(scores)))
    out = keras.layers.Activation("softmax", dtype="float32", name="topics")(keras.layers.Add()([logits, scaled]))
    return keras.Model([recurrent.input, scores], out, name=f"{variant}-joint")


def train_joint(data, variant: str, seed: int, cache_dir: Path, **overrides) -> dict:
    """The joint model's validation and test probabilities and what it learnt (``a``, epochs);
    ``overrides`` change the ``default`` preset (small smoke runs)."""
    import keras

    from training.calibration import apply_temperature, fit_temperature
    from training.dataset import texts_of
    from training.embeddings import pretrain
    from training.lengths import fit_arguments
    from training.models import TextEncoder
    from training.ngrams import fit_ngram_classifier
    from training.presets import preset
    from training.train import _optimizer, pretraining_documents

    settings = preset("default", variant, **overrides)
    keras.utils.set_random_seed(seed)
    fit, val = data.validation_split(settings.val_fraction, seed)
    fit = fit.head(settings.train_limit)
    fit_texts, val_texts, test_texts = (split.texts(settings.text) for split in (fit, val, data.test))
    n_labels = len(data.labels)
    encoder = TextEncoder(settings)
    encoder.adapt(fit_texts)
    x_fit, x_val, x_test = (encoder.encode(t) for t in (fit_texts, val_texts, test_texts))
    embeddings = pretrain(encoder, texts_of(pretraining_documents(data, fit, settings.train_limit), settings.text),
                          settings.embedding_dim, settings.word2vec_epochs, seed, cache_dir)
    oof = out_of_fold_scores(fit_texts, fit.y, n_labels, settings, seed)
    svm = fit_ngram_classifier(fit_texts, fit.y, n_labels, min_df=settings.ngram_min_df, c=settings.ngram_c,
                               seed=seed, learner=settings.ngram_learner)
    s_val, s_test = _svm_scores(svm, val_texts), _svm_scores(svm, test_texts)
    # the out-of-fold scores' own temperature (fit split only) starts the scale
    scale = 1.0 / fit_temperature(_softmax(oof), fit.y, bounds=(0.01, 10.0))
    model = build_joint(variant, settings, n_labels, encoder.vocabulary_size(), embeddings, scale)
    steps = int(np.ceil(len(x_fit) / settings.batch_size))
    model.compile(optimizer=_optimizer(settings, steps), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    fitted = model.fit(**fit_arguments(settings, (x_fit, fit.y), (x_val, val.y), seed, sides=(oof, s_val)),
                       epochs=settings.epochs, verbose=0,
                       callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience,
                                                                restore_best_weights=True)])
    val_probs = model.predict((x_val, s_val), batch_size=256, verbose=0)
    test_probs = model.predict((x_test, s_test), batch_size=256, verbose=0)
    temperature = fit_temperature(val_probs, val.y)
    return {"probs": [apply_temperature(p, temperature) for p in (val_probs, test_probs)],
            "scale": (float(scale), float(model.get_layer("svm_scale").get_weights()[0].ravel()[0])),
            "epochs": len(fitted.history["loss"])}


def trial(corpus: Path, variant: str, roots: str, seeds: list[int], cache_dir: Path) -> list[dict]:
    from training.dataset import load

    data = load(corpus)
    rows = []
    for seed in seeds:
        _, val = data.validation_split(0.1, seed)
        texts, ys = [val.texts(), data.test.texts()], (val.y, data.test.y)
        root = Path(roots.format(seed=seed))
        members = {m: _probs(root, m, texts) for m in (variant, "ngram")}
        joint = train_joint(data, variant, seed, cache_dir)
        arms = {variant: (members[variant], {}), f"{variant}-ngram": _pool(members, val.y),
                "joint": (joint["probs"], {"scale start, end": joint["scale"], "epochs": joint["epochs"]}),
                "joint-ngram": _pool({"joint": joint["probs"], "ngram": members["ngram"]}, val.y)}
        for arm, (probs, info) in arms.items():
            rows.append({"seed": seed, "arm": arm, "info": info, **_both(probs, ys)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--variant", default="gru")
    parser.add_argument("--roots", required=True, help="model root per seed, with {seed}")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "runs" / "cache")
    parser.add_argument("--out", type=Path, default=None, help="raw rows (default runs/joint-trial-VARIANT.json)")
    args = parser.parse_args(argv)
    rows = trial(args.corpus, args.variant, args.roots, [int(s) for s in args.seeds.split(",")], args.cache_dir)
    write_rows(args.out or REPO / "runs" / f"joint-trial-{args.variant}.json", rows)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
