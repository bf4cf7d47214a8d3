"""ECE, temperature scaling and the abstain threshold on synthetic, known answers."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibration import apply_temperature, choose_threshold, expected_calibration_error, fit_temperature


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _calibrated_sample(n=20000, k=5, seed=0):
    rng = np.random.default_rng(seed)
    probs = _softmax(rng.normal(scale=2.0, size=(n, k)))
    y = np.array([rng.choice(k, p=p) for p in probs])
    return probs, y


def test_ece_is_small_for_calibrated_and_large_for_overconfident():
    probs, y = _calibrated_sample()
    assert expected_calibration_error(probs, y) < 0.02
    overconfident = apply_temperature(probs, 0.3)
    assert expected_calibration_error(overconfident, y) > 0.1


def test_temperature_recovers_the_distortion():
    probs, y = _calibrated_sample()
    distorted = apply_temperature(probs, 0.4)  # sharpened: a fitted T near 1/0.4 undoes it
    temperature = fit_temperature(distorted, y)
    assert temperature == pytest.approx(2.5, rel=0.1)
    assert expected_calibration_error(apply_temperature(distorted, temperature), y) < 0.02


def test_temperature_stays_one_when_already_calibrated():
    probs, y = _calibrated_sample(seed=1)
    assert fit_temperature(probs, y) == pytest.approx(1.0, abs=0.06)


def test_threshold_reaches_target_precision_with_most_coverage():
    probs, y = _calibrated_sample(seed=2)
    threshold = choose_threshold(probs, y, 0.97)
    accepted = probs.max(axis=1) >= threshold.value
    precision = np.mean(probs.argmax(axis=1)[accepted] == y[accepted])
    assert precision == pytest.approx(threshold.precision) and precision >= 0.97
    assert threshold.coverage == pytest.approx(accepted.mean())
    lower = probs.max(axis=1) >= np.sort(probs.max(axis=1))[::-1][accepted.sum() + 50]
    assert np.mean(probs.argmax(axis=1)[lower] == y[lower]) < 0.97 or lower.mean() <= threshold.coverage


def test_threshold_treats_ties_together_and_can_refuse_everything():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4]])
    y = np.array([0, 1, 0])  # the two 0.9 answers are tied, one of them wrong
    threshold = choose_threshold(probs, y, 0.97)
    assert threshold.coverage == 0.0 and threshold.value > 0.9
    assert not np.any(probs.max(axis=1) >= threshold.value)
