"""Dynamic micro-batching: concurrent requests for the same model+version share one backend call.

Recurrent models score a batch of 32 texts in little more time than one, so merging concurrent
requests is most of the gateway's throughput. Each (model, version, version label) has a lane.
A lane with no call running calls the backend at once from the caller's thread, so a lone
client pays neither a delay nor a thread hand-off.
While a call runs, the lane's queued requests go together when they reach ``max_size``
documents or when the oldest has waited ``max_delay`` — and only while fewer than
``concurrency`` calls of that lane are running, so under load batches grow by themselves
instead of queueing more calls.
Results are split back per request. Admission is bounded by ``max_queued`` documents in the
whole gateway; past it, requests fail fast with ``ResourceExhausted`` rather than pile up.
The export cuts a batch to its longest text, so a short text batched with a long one pays for
the long one.  With ``length_classes`` (token bounds such as ``(60, 150)``), each request gets
the class of its longest text and a batch takes only requests of its oldest request's class:
short texts wait for the lane with short texts, not with long ones, and no request is passed
over for long, since the oldest always goes next.  With ``split_call_cost`` set, a merged batch
is also cut by length where that saves more than the extra calls and time steps cost
(:func:`scoring.lengths.length_groups`).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import numpy as np

from scoring.backends.base import Backend, BackendResult
from scoring.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, ServiceError, Unavailable
from scoring.lengths import length_groups, token_estimate
from service.metrics import Metrics

log = logging.getLogger(__name__)

LaneKey = tuple[str, int | None, str | None]


@dataclass(eq=False)
class _Item:
    texts: Sequence[str]
    deadline: float
    enqueued: float
    length_class: int = 0
    future: Future = field(default_factory=Future)


@dataclass(eq=False)
class _Lane:
    key: LaneKey
    items: deque = field(default_factory=deque)
    documents: int = 0
    running: int = 0


def _copy(error: ServiceError) -> ServiceError:
    """A fresh exception per waiter: one instance raised in many threads would mix tracebacks."""
    return type(error)(error.message)


class MicroBatcher:
    """Merges concurrent ``submit`` calls into backend calls; thread-safe."""

    def __init__(self, backend: Backend, max_size: int = 64, max_delay_s: float = 0.002,
                 max_queued: int = 4096, concurrency: int = 2, metrics: Metrics | None = None,
                 split_call_cost: int = 0, split_step_cost: int = 0, length_classes: Sequence[int] = ()):
        self.backend = backend
        self.length_classes = sorted(set(length_classes))
        self.split_call_cost = max(0, split_call_cost)
        self.split_step_cost = max(0, split_step_cost)
        self._max_tokens: dict[LaneKey, int] = {}  # each lane's max_length, from its answers
        self.max_size = max(1, max_size)
        self.max_delay_s = max(0.0, max_delay_s)
        self.max_queued = max(1, max_queued)
        self.concurrency = max(1, concurrency)
        self.metrics = metrics or Metrics()
        self._cond = threading.Condition()
        self._lanes: dict[LaneKey, _Lane] = {}
        self._queued = 0
        self._closing = False
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency * 4, thread_name_prefix="batch-call")
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="batch-dispatch", daemon=True)
        self._dispatcher.start()

    @property
    def queued_documents(self) -> int:
        """Documents admitted and not yet answered (the queue-depth gauge)."""
        with self._cond:
            return self._queued

    def submit(self, texts: Sequence[str], model: str, version: int | None, version_label: str | None,
               deadline: float) -> BackendResult:
        """Score ``texts`` as part of a batch; ``deadline`` is a ``time.monotonic()`` instant.

        Returns the backend's result restricted to these texts' rows.
        """
        n = len(texts)
        item = _Item(texts=texts, deadline=deadline, enqueued=time.monotonic(),
                     length_class=self._length_class(texts))
        key = (model, version, version_label)
        with self._cond:
            if self._closing:
                raise Unavailable("the gateway is shutting down")
            if self._queued + n > self.max_queued:
                raise ResourceExhausted(f"gateway overloaded: {self._queued} documents queued, "
                                        f"limit {self.max_queued}; retry later")
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane(key)
            self._admit(n)
            inline = lane.running == 0 and not lane.items
            if inline:  # an idle model: call it from this thread, no hand-offs
                lane.running += 1
                item.future.set_running_or_notify_cancel()
            else:
                lane.items.append(item)
                lane.documents += n
                self._cond.notify_all()
        if inline:
            self._run(lane, [item])
            return item.future.result()
        try:
            return item.future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            item.future.cancel()
            raise DeadlineExceeded("deadline exceeded while waiting for the model") from None

    def close(self, timeout: float | None = None) -> None:
        """Stop admitting, send what is queued without waiting for fuller batches, then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._dispatcher.join(timeout)
        self._pool.shutdown(wait=True)

    def _length_class(self, texts: Sequence[str]) -> int:
        if not self.length_classes or not texts:
            return 0
        return bisect.bisect_left(self.length_classes, max(token_estimate(t) for t in texts))

    # -- dispatcher ----------------------------------------------------------------------
    def _admit(self, n: int) -> None:
        self._queued += n
        self.metrics.queue_depth.set(self._queued)

    def _dispatch_loop(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                wake_at: float | None = None
                for lane in list(self._lanes.values()):
                    if not lane.items:
                        if lane.running == 0:
                            del self._lanes[lane.key]
                        continue
                    if lane.running >= self.concurrency:
                        continue  # a finishing call notifies
                    # Items of an idle lane go at once (they queued while its last call ran);
                    # a busy lane holds them up to max_delay so later requests can join.
                    due = lane.items[0].enqueued + (self.max_delay_s if lane.running else 0.0)
                    if lane.documents >= self.max_size or now >= due or self._closing:
                        batch = self._take(lane, now)
                        if batch:
                            lane.running += 1
                            self._pool.submit(self._run, lane, batch)
                        wake_at = now  # look at this lane again at once
                    else:
                        wake_at = due if wake_at is None else min(wake_at, due)
                if self._closing and not self._lanes:
                    return
                timeout = None if wake_at is None else wake_at - time.monotonic()
                if timeout is None or timeout > 0:
                    self._cond.wait(timeout)

    def _take(self, lane: _Lane, now: float) -> list[_Item]:
        """Pop whole requests of the oldest live request's length class, up to ``max_size``
        documents (a larger request goes alone); requests of other classes keep their places."""
        batch: list[_Item] = []
        passed: list[_Item] = []
        size = 0
        while lane.items:
            item = lane.items[0]
            n = len(item.texts)
            if batch and item.length_class != batch[0].length_class:
                passed.append(lane.items.popleft())
                continue
            if batch and size + n > self.max_size:
                break
            lane.items.popleft()
            lane.documents -= n
            if not item.future.set_running_or_notify_cancel():
                self._admit(-n)  # its caller gave up already
                continue
            if item.deadline <= now:
                item.future.set_exception(DeadlineExceeded("deadline exceeded while queued for the model"))
                self._admit(-n)
                continue
            batch.append(item)
            size += n
        lane.items.extendleft(reversed(passed))
        return batch

    def _run(self, lane: _Lane, batch: list[_Item]) -> None:
        try:
            self._score(lane.key, batch)
        finally:
            with self._cond:
                lane.running -= 1
                self._admit(-sum(len(item.texts) for item in batch))
                self._cond.notify_all()

    def _score(self, key: LaneKey, batch: list[_Item]) -> None:
        """One backend call for ``batch``; every item's future gets its rows or the error."""
        model, version, version_label = key
        texts = [text for item in batch for text in item.texts]
        deadline = max(item.deadline for item in batch)
        started = time.monotonic()
        try:
            result = self._classify(key, texts, deadline)
            if result.probabilities.shape[0] != len(texts):
                raise RuntimeError(f"backend returned {result.probabilities.shape[0]} rows for {len(texts)} texts")
        except ServiceError as exc:
            if isinstance(exc, InvalidArgument) and len(batch) > 1:
                # One request's input may have failed the merged call: score each alone, so only it fails.
                for item in batch:
                    self._score(key, [item])
                return
            for item in batch:
                item.future.set_exception(_copy(exc))
        except Exception as exc:
            log.exception("backend call for model %s failed", model)
            for item in batch:
                item.future.set_exception(exc)
        else:
            start = 0
            for item in batch:
                end = start + len(item.texts)
                item.future.set_result(dataclasses.replace(result, probabilities=result.probabilities[start:end]))
                start = end
            self.metrics.backend_latency.labels(model).observe(time.monotonic() - started)
            self.metrics.batch_documents.labels(model).observe(len(texts))
            self.metrics.batch_requests.labels(model).observe(len(batch))

    def _classify(self, key: LaneKey, texts: list[str], deadline: float) -> BackendResult:
        """One backend call, or one per length group when cutting the batch costs less."""
        model, version, version_label = key
        groups = [list(range(len(texts)))]
        if self.split_call_cost and len(texts) > 1:
            cap = self._max_tokens.get(key)
            groups = length_groups([token_estimate(t, cap) for t in texts], self.split_call_cost,
                                   self.split_step_cost)
            if len(groups) == 1:  # one call after all: in input order, as the rows are read back
                groups = [list(range(len(texts)))]
        result = None
        for group in groups:
            part = self.backend.classify([texts[i] for i in group], model, version=version,
                                         version_label=version_label,
                                         timeout=max(0.001, deadline - time.monotonic()))
            if result is None:
                result = part if len(groups) == 1 else dataclasses.replace(
                    part, probabilities=np.empty((len(texts), part.probabilities.shape[1]), part.probabilities.dtype))
                version, version_label = part.version, None  # later groups: the same version
            if len(groups) > 1:
                result.probabilities[group] = part.probabilities
        max_length = result.metadata.settings.get("max_length")
        if isinstance(max_length, int):
            self._max_tokens[key] = max_length
        return result
