"""The micro-batcher alone, over a small deterministic Backend (no model needed to test merging)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from scoring.backends.base import Backend, BackendResult, ModelInfo
from scoring.errors import DeadlineExceeded, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from service.batching import MicroBatcher
from training.layout import ExportMetadata

LABELS = ["a", "b", "c"]
META = ExportMetadata(model="m", version=1, variant="rnn", preset="test", labels=LABELS)


class LengthBackend(Backend):
    """Probabilities derived from each text's length; records every call's texts."""

    def __init__(self, delay_s: float = 0.0):
        self.calls: list[list[str]] = []
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def classify(self, texts, model, version=None, version_label=None, timeout=None):
        with self.lock:
            self.calls.append(list(texts))
        time.sleep(self.delay_s)
        if model != "m":
            raise NotFound(f"model {model!r} is not served")
        logits = np.array([[len(t) % 3, len(t) % 5, 1.0] for t in texts], dtype=np.float64)
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return BackendResult("m", version or 1, LABELS, probabilities, META)

    def models(self):
        return [ModelInfo("m", [])]

    def ready(self, model=None):
        return True


def run_concurrently(batcher, groups, deadline_s=5.0, model="m"):
    barrier = threading.Barrier(len(groups))

    def one(texts):
        barrier.wait()
        return batcher.submit(texts, model, None, None, time.monotonic() + deadline_s)

    with ThreadPoolExecutor(len(groups)) as pool:
        return list(pool.map(one, groups))


def test_concurrent_submissions_share_calls_and_get_their_own_rows():
    backend = LengthBackend()
    batcher = MicroBatcher(backend, max_size=64, max_delay_s=0.05)
    groups = [[f"text {'x' * i}", f"t{i}"] for i in range(12)]
    results = run_concurrently(batcher, groups)
    batcher.close()
    assert len(backend.calls) < len(groups)
    assert sorted(t for call in backend.calls for t in call) == sorted(t for g in groups for t in g)
    alone = LengthBackend()
    for group, result in zip(groups, results):
        assert np.allclose(result.probabilities, alone.classify(group, "m").probabilities)


def test_batch_size_is_capped_and_an_oversized_request_goes_alone():
    backend = LengthBackend(delay_s=0.01)
    batcher = MicroBatcher(backend, max_size=4, max_delay_s=0.05, concurrency=1)
    run_concurrently(batcher, [["a", "b"]] * 6 + [["z"] * 9])
    batcher.close()
    sizes = sorted(len(c) for c in backend.calls)
    assert sizes[-1] == 9 and all(s <= 4 for s in sizes[:-1]) and sum(sizes) == 21


def test_errors_reach_every_request_of_the_batch():
    batcher = MicroBatcher(LengthBackend(), max_size=64, max_delay_s=0.05)
    with pytest.raises(NotFound):
        run_concurrently(batcher, [["a"], ["b"]], model="nosuch")
    batcher.close()


class PickyBackend(LengthBackend):
    """Refuses every call holding a text "bad", as a model fails a whole call on one input it cannot read."""

    def classify(self, texts, model, version=None, version_label=None, timeout=None):
        if "bad" in texts:
            with self.lock:
                self.calls.append(list(texts))
            raise InvalidArgument("cannot read 'bad'")
        return super().classify(texts, model, version, version_label, timeout)


def test_a_bad_input_fails_only_its_own_request_of_a_merged_batch():
    backend = PickyBackend(delay_s=0.1)
    batcher = MicroBatcher(backend, max_size=64, max_delay_s=0.2, concurrency=1)
    groups = [["good one"], ["bad"], ["good two", "good three"]]
    try:
        with ThreadPoolExecutor(1 + len(groups)) as pool:
            pool.submit(batcher.submit, ["busy"], "m", None, None, time.monotonic() + 5)
            while not backend.calls:  # the lane is busy: what comes now waits and is merged
                time.sleep(0.005)
            futures = [pool.submit(batcher.submit, texts, "m", None, None, time.monotonic() + 5) for texts in groups]
            with pytest.raises(InvalidArgument, match="bad"):
                futures[1].result()
            good = [futures[0].result(), futures[2].result()]
        assert sorted(backend.calls[1]) == ["bad", "good one", "good three", "good two"]  # they were merged
        assert [r.probabilities.shape[0] for r in good] == [1, 2]
        np.testing.assert_allclose(good[1].probabilities,
                                   backend.classify(["good two", "good three"], "m").probabilities)
    finally:
        batcher.close()


def test_queue_bound_and_deadlines():
    backend = LengthBackend(delay_s=0.3)
    batcher = MicroBatcher(backend, max_size=2, max_delay_s=0.0, max_queued=3, concurrency=1)
    first = threading.Thread(target=batcher.submit, args=(["a", "b"], "m", None, None, time.monotonic() + 5))
    first.start()
    while batcher.queued_documents < 2:
        time.sleep(0.001)
    with pytest.raises(ResourceExhausted):
        batcher.submit(["c", "d"], "m", None, None, time.monotonic() + 5)
    with pytest.raises(DeadlineExceeded):  # waits behind the running call, gives up, is never sent
        batcher.submit(["late"], "m", None, None, time.monotonic() + 0.05)
    first.join()
    batcher.close()
    assert ["late"] not in backend.calls
    assert batcher.queued_documents == 0


def test_idle_lane_calls_at_once_busy_lane_waits_for_company():
    backend = LengthBackend(delay_s=0.2)
    batcher = MicroBatcher(backend, max_size=64, max_delay_s=0.1, concurrency=2)
    started = time.monotonic()
    result = batcher.submit(["alone"], "m", None, None, time.monotonic() + 5)
    assert time.monotonic() - started < 0.28 and result.probabilities.shape == (1, 3)  # no 0.1 s wait
    run_concurrently(batcher, [[f"t{i}"] for i in range(6)])
    batcher.close()
    assert len(backend.calls) <= 3  # the first alone, the rest merged while it ran


def test_close_sends_what_is_queued_then_refuses():
    backend = LengthBackend(delay_s=0.3)
    batcher = MicroBatcher(backend, max_size=64, max_delay_s=10.0, concurrency=2)
    waiters = [threading.Thread(target=batcher.submit, args=([t], "m", None, None, time.monotonic() + 20))
               for t in ("first", "queued")]
    waiters[0].start()
    while not backend.calls:
        time.sleep(0.001)
    waiters[1].start()  # waits up to 10 s for company behind the running call
    while batcher.queued_documents < 2:
        time.sleep(0.001)
    started = time.monotonic()
    batcher.close()
    for waiter in waiters:
        waiter.join(5)
    assert backend.calls == [["first"], ["queued"]] and time.monotonic() - started < 2
    with pytest.raises(Unavailable):
        batcher.submit(["r"], "m", None, None, time.monotonic() + 1)
