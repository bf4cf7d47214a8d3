"""Confidence: expected calibration error, temperature scaling and the abstain threshold.

All fitted on the validation split (carved from training data), in NumPy so the fit is cheap
and deterministic; the temperature is then baked into the exported graph.
"""

from __future__ import annotations

import numpy as np

from training.layout import Threshold

_EPS = 1e-12


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Weighted gap between confidence and accuracy over equal-width confidence bins."""
    if len(y) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(error)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the same transform the exported graph applies."""
    logits = np.log(np.maximum(probs, _EPS)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def _nll(probs: np.ndarray, y: np.ndarray, temperature: float) -> float:
    scaled = apply_temperature(probs, temperature)
    return float(-np.mean(np.log(np.maximum(scaled[np.arange(len(y)), y], _EPS))))


def fit_temperature(probs: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = (0.2, 10.0)) -> float:
    """Temperature within ``bounds`` minimising validation NLL (golden-section search on log T)."""
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _nll(probs, y, np.exp(a)), _nll(probs, y, np.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _nll(probs, y, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _nll(probs, y, np.exp(b))
    best = float(np.exp((lo + hi) / 2))
    return best if _nll(probs, y, best) < _nll(probs, y, 1.0) else 1.0


def choose_threshold(probs: np.ndarray, y: np.ndarray, target_precision: float) -> Threshold:
    """Lowest confidence cut whose accepted answers reach ``target_precision``.

    Lowest cut = most coverage.  Only cuts between distinct confidences count, so tied
    answers are accepted or refused together, exactly as the service will do.  When no cut
    reaches the target, the threshold sits above every confidence (coverage 0).
    """
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(float)
    order = np.argsort(-confidence, kind="stable")
    confidence, correct = confidence[order], correct[order]
    precision = np.cumsum(correct) / np.arange(1, len(correct) + 1)
    last_of_tie = np.r_[confidence[1:] != confidence[:-1], True]
    ok = np.flatnonzero((precision >= target_precision) & last_of_tie)
    if len(ok) == 0:
        value = float(np.nextafter(np.float32(confidence.max() if len(confidence) else 1.0), np.float32(2)))
        return Threshold(value=value, target_precision=target_precision, precision=1.0, coverage=0.0)
    k = int(ok[-1])
    return Threshold(value=float(confidence[k]), target_precision=target_precision,
                     precision=float(precision[k]), coverage=float((k + 1) / len(y)))
