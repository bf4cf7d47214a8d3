"""How exported models are combined: the pooling, and weights chosen on validation.

Hybrids (a recurrent variant plus the n-gram model) and the ensemble pool their members'
probabilities.  Chosen weights use a weighted geometric mean, ``softmax(sum_i a_i log p_i)``:
on validation it beat the weighted arithmetic mean (docs/benchmarks.md), since a confident
member can veto what the other finds unlikely.  The non-negative ``a_i`` are fitted jointly on
the validation split, where none of the members was fitted, to minimise the negative
log-likelihood of its labels; that objective is convex in ``a``, so the fit is the one best mix,
found deterministically.  ``sum(a)`` is the inverse temperature, ``a / sum(a)`` the weights.
"""

from __future__ import annotations

import numpy as np

MEAN, PRODUCT = "mean", "product"
# Members whose weight falls below this share are dropped and the rest refitted: they would cost
# serving time for no visible change in the answers.
MIN_WEIGHT = 0.02
# A little L2 on ``a`` so a member that tells nothing apart gets no weight rather than any.
_L2 = 1e-4
_EPS = 1e-12


def pool(member_probs: list[np.ndarray], weights: np.ndarray, pooling: str) -> np.ndarray:
    """The pooled probabilities (temperature 1): what the exported graph computes, in NumPy."""
    if pooling == MEAN:
        return np.tensordot(weights, member_probs, axes=1)
    logits = np.tensordot(weights, [np.log(np.maximum(p, _EPS)) for p in member_probs], axes=1)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def _fit(logs: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.optimize import minimize

    rows = np.arange(len(y))
    true_logs = logs[:, rows, y]  # [members, n]

    def objective(a):
        logits = np.tensordot(a, logs, axes=1)
        logits -= logits.max(axis=1, keepdims=True)
        q = np.exp(logits)
        q /= q.sum(axis=1, keepdims=True)
        nll = -np.mean(np.log(np.maximum(q[rows, y], _EPS)))
        expected = np.einsum("nk,mnk->mn", q, logs)  # E_q[log p_m] per document
        gradient = np.mean(expected - true_logs, axis=1)
        return nll + _L2 * a @ a, gradient + 2 * _L2 * a

    start = np.full(len(logs), 1.0 / len(logs))
    return minimize(objective, start, jac=True, method="L-BFGS-B", bounds=[(0, None)] * len(logs)).x


def choose_weights(member_probs: list[np.ndarray], y: np.ndarray) -> tuple[np.ndarray, float]:
    """(weights on the simplex, temperature) of the geometric pool that best fits ``y``.

    ``member_probs`` are the members' validation probabilities, ``[n, n_labels]`` each.
    Members left under :data:`MIN_WEIGHT` get weight 0 and the others are refitted.
    """
    if not member_probs:
        raise ValueError("no members to weigh")
    logs = np.stack([np.log(np.maximum(p, _EPS)) for p in member_probs])
    kept = np.arange(len(member_probs))
    while True:
        a = _fit(logs[kept], y)
        share = a / max(a.sum(), _EPS)
        if len(kept) == 1 or share.min() >= MIN_WEIGHT:
            break
        kept = kept[share >= MIN_WEIGHT] if share.max() >= MIN_WEIGHT else kept[[int(share.argmax())]]
    weights = np.zeros(len(member_probs))
    total = max(float(a.sum()), _EPS)
    weights[kept] = a / total
    return weights, 1.0 / total
