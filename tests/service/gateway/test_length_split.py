"""The micro-batcher cuts a merged batch of short and long texts into calls by length, with the
real embedded backend and a tiny SavedModel; every request still gets its own answer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.batching import MicroBatcher
from tests.support.recording import Recording, embedded_backend

SHORT = ["Wheat exports rose", "Bank rate cut", "Oil up", "Gold falls"]
LONG = [" ".join(["crude oil prices rose as OPEC cut output"] * 40),
        " ".join(["the company said quarterly profit fell sharply"] * 45)]


@pytest.fixture(scope="module")
def backend(tiny_model_root):
    with embedded_backend(tiny_model_root) as backend:
        yield backend


class Held(Recording):
    """Holds its first call until released, so the requests sent meanwhile queue and merge."""

    def __init__(self, backend):
        super().__init__(backend)
        self.release = threading.Event()

    def classify(self, texts, *args, **kwargs):
        if not self.calls:
            self.calls.append(list(texts))
            self.release.wait(30)
            return self.backend.classify(texts, *args, **kwargs)
        return super().classify(texts, *args, **kwargs)


def _merged(backend, split_call_cost: int = 0, length_classes=()):
    """Submit every text as its own request while the lane is busy, so all of them merge."""
    held = Held(backend)
    batcher = MicroBatcher(held, max_size=64, max_delay_s=0.0, concurrency=1,
                           split_call_cost=split_call_cost, length_classes=length_classes)
    texts = [LONG[0], SHORT[0], SHORT[1], LONG[1], SHORT[2], SHORT[3]]
    try:
        with ThreadPoolExecutor(len(texts) + 1) as pool:
            busy = pool.submit(batcher.submit, ["busy"], "gru", None, None, time.monotonic() + 60)
            while not held.calls:
                time.sleep(0.001)
            futures = [pool.submit(batcher.submit, [t], "gru", None, None, time.monotonic() + 60) for t in texts]
            while batcher.queued_documents < 1 + len(texts):
                time.sleep(0.001)
            held.release.set()
            results = [f.result() for f in futures]
            busy.result()
    finally:
        held.release.set()
        batcher.close()
    return texts, results, held.calls[1:]


def test_a_mixed_batch_is_cut_by_length_and_each_request_gets_its_own_answer(backend):
    texts, results, calls = _merged(backend, split_call_cost=100)
    assert sorted(map(sorted, calls)) == sorted([sorted(SHORT), sorted(LONG)])
    for text, result in zip(texts, results):
        alone = backend.classify([text], "gru").probabilities
        np.testing.assert_allclose(result.probabilities, alone, atol=1e-5)
        assert result.version == 1


def test_no_cut_when_calls_cost_more_than_the_saving_or_splitting_is_off(backend):
    for cost in (0, 10**6):
        texts, _, calls = _merged(backend, split_call_cost=cost)
        assert [sorted(c) for c in calls] == [sorted(texts)]


def test_length_classes_keep_short_and_long_requests_apart_oldest_class_first(backend):
    texts, results, calls = _merged(backend, length_classes=(60, 150))
    # the oldest queued request is long, so the long ones go first, then the short ones
    assert calls == [[LONG[0], LONG[1]], SHORT]
    for text, result in zip(texts, results):
        np.testing.assert_allclose(result.probabilities, backend.classify([text], "gru").probabilities, atol=1e-5)


def test_a_request_takes_the_class_of_its_longest_text(backend):
    batcher = MicroBatcher(backend, length_classes=(60, 150))
    try:
        assert [batcher._length_class(t) for t in (SHORT, [SHORT[0], LONG[0]], [" ".join(["w"] * 100)], [])] == [
            0, 2, 1, 0]
    finally:
        batcher.close()
