"""Trials of what the served ensemble could pool, chosen on validation, over seeds.

Each seed's exported members (``train --variant all --seed S --model-root ROOT``, ROOT with
``{seed}`` in it) give their validation and test probabilities; each arm pools a set of them
with today's weighted geometric mean (:func:`training.ensemble.choose_weights`, fitted on
validation).  Arms beside today's five members (an NB-SVM arm, in the "more in the ensemble"
row of docs/benchmarks.md, was dropped once ``ngram`` itself became that NB-SVM):

- ``+char``: a LinearSVC over character 2-5-grams (``bench.ngram_grid``'s ``char`` features) as
  a member of its own, where side by side with the words in one SVM they gained nothing: a
  member that reads the text another way may err elsewhere;
- ``+extra``: another export of a recurrent variant (``--extra gru=runs/ema/ema/seed-{seed}``),
  a second training run beside the first; with several ``--extra``, also all of them at once
  (e.g. other starts of one variant on the same split, ``train --init-seed``);
- ``refit`` (with ``--refit ROOT``): today's pool and weights, each member's test probabilities
  taken from its export in ROOT instead, trained with ``train --refit`` (again on the fit and
  validation splits together, for the epochs and with the temperature validation chose).
  Validation can no longer judge it (the members have seen it), so it has test figures only;
  with ``--hold-out-validation`` (both roots trained with ``train --hold-out-validation``) those
  "test" figures are the validation split's, which none of the models has read;
- ``+sentence`` (with ``--sentence FILE`` from ``bench.sentence_trial embed``): a logistic
  regression on a frozen pretrained sentence encoder's embeddings as a member of its own (the
  member alone is the ``sentence`` row);
- ``prior``: today's pool with ``tau * log(prior)`` subtracted from its logits (the fit split's
  topic shares), tau chosen on validation macro-F1 over a grid: a trial for rare topics.

Pool weights are fitted on validation, so an arm's validation figures are in-sample; each arm
also gets out-of-fold ones (``val oof``: each half of validation pooled with weights fitted on
the other half), which compare arms fairly.  Test figures are printed beside validation for the
record, never used to choose::

    python -m bench.ensemble_trial --roots 'runs/all/seed-{seed}' --extra 'gru=runs/ema/ema/seed-{seed}'
    python -m bench.ensemble_trial --roots 'runs/all/seed-{seed}' --refit 'runs/refit/seed-{seed}'

``--members`` narrows today's pool, e.g. to a hybrid (``--members gru,ngram``)::

    python -m bench.ensemble_trial --roots 'runs/inits/seed-{seed}/base' --members gru,ngram \\
        --extra 'gru=runs/inits/seed-{seed}/init-2' --extra 'gru=runs/inits/seed-{seed}/init-3'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_CORPUS, REPO, mean_std, write_rows

MEMBERS = ("rnn", "lstm", "gru", "bilstm", "ngram")
CHAR_C = 1.0  # the best C of the character features alone on validation (docs/benchmarks.md)
TAUS = np.round(np.arange(0.0, 1.01, 0.1), 2)


def _probs(root: Path, model: str, texts: list[list[str]]) -> list[np.ndarray]:
    from training.evaluate import ServingModel
    from training.layout import ModelRoot

    layout = ModelRoot(root)
    served = ServingModel(layout.version_dir(model, layout.latest(model)))
    return [served.predict(t) for t in texts]


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def _char_svm(fit, texts: list[list[str]], seed: int, n_labels: int, min_df: int) -> list[np.ndarray]:
    from sklearn.svm import LinearSVC

    from bench.ngram_grid import _features

    (x_fit, *rest), _ = _features("char", texts, min_df)
    svm = LinearSVC(C=CHAR_C, random_state=seed).fit(x_fit, fit.y)
    return [_softmax(_all_labels(svm, x, n_labels)) for x in rest]


def _all_labels(svm, x, n_labels: int) -> np.ndarray:
    """The SVM's scores as ``[n, n_labels]``: a topic absent from the fit split scores far below."""
    scores = np.full((x.shape[0], n_labels), -1e3)
    scores[:, svm.classes_] = svm.decision_function(x)
    return scores


def _figures(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import f1_score

    predicted = probs.argmax(axis=1)
    return {"accuracy": float(np.mean(predicted == y)), "macro_f1": float(f1_score(y, predicted, average="macro"))}


def _both(probs: list[np.ndarray], ys: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Validation and test figures, keyed ``val_accuracy`` ... ``test_macro_f1``."""
    return {f"{split}_{k}": v for split, p, y in zip(("val", "test"), probs, ys, strict=True)
            for k, v in _figures(p, y).items()}


def _apply(member_probs: list[np.ndarray], fitted: tuple[np.ndarray, float]) -> np.ndarray:
    """The pool of ``member_probs`` under fitted (weights, temperature), as the export computes it."""
    from training.calibration import apply_temperature
    from training.ensemble import PRODUCT, pool

    weights, temperature = fitted
    return apply_temperature(pool(member_probs, weights, PRODUCT), temperature)


def _pool(members: dict[str, list[np.ndarray]], y_val: np.ndarray) -> tuple[list[np.ndarray], dict, tuple]:
    """Validation and test probabilities of the pool fitted on validation, its weights by member
    and the fit itself (to pool other test probabilities of the same members)."""
    from training.ensemble import choose_weights

    names = list(members)
    fitted = choose_weights([members[n][0] for n in names], y_val)
    pooled = [_apply([members[n][i] for n in names], fitted) for i in (0, 1)]
    return pooled, {n: round(float(w), 3) for n, w in zip(names, fitted[0], strict=True)}, fitted


def _out_of_fold(members: dict[str, list[np.ndarray]], y_val: np.ndarray, seed: int) -> np.ndarray:
    """Validation probabilities of the pool with each half's weights fitted on the other half.

    The weights are fitted on validation, so the pool's validation figures are in-sample: a
    member added can only help the fit.  Out of fold they are not, and arms compare fairly.
    """
    from training.ensemble import choose_weights

    halves = np.random.RandomState(seed).permutation(len(y_val)) % 2
    probs = np.zeros_like(next(iter(members.values()))[0])
    for half in (0, 1):
        fit_rows, held = halves != half, halves == half
        fitted = choose_weights([p[0][fit_rows] for p in members.values()], y_val[fit_rows])
        probs[held] = _apply([p[0][held] for p in members.values()], fitted)
    return probs


def trial(corpus: Path, roots: str, seeds: list[int], extra: list[tuple[str, str]], val_fraction: float,
          min_df: int, members: tuple[str, ...] = MEMBERS, refit: str | None = None,
          hold_out_validation: bool = False, sentence: Path | None = None) -> list[dict]:
    from training.dataset import load

    everything = load(corpus)
    rows = []
    for seed in seeds:
        data = everything.holding_out_validation(val_fraction, seed) if hold_out_validation else everything
        fit, val = data.validation_split(val_fraction, seed)
        texts = [val.texts(), data.test.texts()]
        ys = (val.y, data.test.y)
        root = Path(roots.format(seed=seed))
        pool = {m: _probs(root, m, texts) for m in members}
        arms = {"today": dict(pool),
                "+char": pool | {"char": _char_svm(fit, [fit.texts(), *texts], seed, len(data.labels), min_df)}}
        runs = {f"{variant}-{i}": _probs(Path(template.format(seed=seed)), variant, texts)
                for i, (variant, template) in enumerate(extra, start=2)}
        arms.update({f"+{run}": pool | {run: probs} for run, probs in runs.items()})
        if len(runs) > 1:
            arms[f"+{len(runs)} runs"] = pool | runs
        if sentence:
            from bench.sentence_trial import member

            encoded = member(sentence, fit, [val, data.test], len(data.labels), seed)
            rows.append({"seed": seed, "arm": "sentence", **_both(encoded, ys)})
            print(json.dumps(rows[-1]), flush=True)
            arms["+sentence"] = pool | {"sentence": encoded}
        for arm, pooled_members in arms.items():
            pooled, weights, fitted = _pool(pooled_members, val.y)
            out_of_fold = _figures(_out_of_fold(pooled_members, val.y, seed), val.y)
            rows.append({"seed": seed, "arm": arm, "weights": weights, **_both(pooled, ys),
                         **{f"val_oof_{k}": v for k, v in out_of_fold.items()}})
            print(json.dumps(rows[-1]), flush=True)
            if arm == "today" and refit:
                refitted = [_probs(Path(refit.format(seed=seed)), m, [texts[1]])[0] for m in pooled_members]
                rows.append({"seed": seed, "arm": "refit", "weights": weights,
                             **{f"test_{k}": v for k, v in _figures(_apply(refitted, fitted), data.test.y).items()}})
                print(json.dumps(rows[-1]), flush=True)
            if arm == "today":
                prior = np.bincount(fit.y, minlength=len(data.labels)) / len(fit.y)
                shift = np.log(np.maximum(prior, 1e-12))
                adjusted = {t: [_softmax(np.log(np.maximum(p, 1e-12)) - t * shift) for p in pooled] for t in TAUS}
                tau = max(TAUS, key=lambda t: (_figures(adjusted[t][0], val.y)["macro_f1"], -t))
                rows.append({"seed": seed, "arm": "prior", "tau": float(tau), **_both(adjusted[tau], ys)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    columns = ("val_accuracy", "val_macro_f1", "val_oof_accuracy", "val_oof_macro_f1", "test_accuracy",
               "test_macro_f1")
    lines = ["| arm | seeds | " + " | ".join(c.replace("_", " ") for c in columns) + " |",
             "|---|---:|" + "---|" * len(columns)]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        cells = [mean_std([r[c] for r in mine if c in r]) for c in columns]
        lines.append(f"| {arm} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--roots", required=True, help="model root per seed, with {seed}")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--extra", action="append", default=[],
                        help="VARIANT=ROOT (with {seed}): another run, each its own arm; several together are "
                             "one more arm")
    parser.add_argument("--members", default=",".join(MEMBERS), help="today's pool, comma-separated")
    parser.add_argument("--refit", help="ROOT (with {seed}) of the same members trained with train --refit")
    parser.add_argument("--hold-out-validation", action="store_true",
                        help="the roots were trained with train --hold-out-validation: their \"test\" is the "
                             "validation split")
    parser.add_argument("--sentence", type=Path,
                        help="sentence embeddings from bench.sentence_trial embed: one more member")
    parser.add_argument("--min-df", type=int, default=3)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ensemble-trial.json")
    args = parser.parse_args(argv)
    extra = [tuple(item.split("=", 1)) for item in args.extra]
    members = tuple(m for m in args.members.split(",") if m)
    rows = trial(args.corpus, args.roots, [int(s) for s in args.seeds.split(",")], extra, args.val_fraction,
                 args.min_df, members, args.refit, args.hold_out_validation, args.sentence)
    write_rows(args.out, rows)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
