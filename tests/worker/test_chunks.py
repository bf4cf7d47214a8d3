"""A chunk is scored in length order and its result lines come back in input order."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from jobs.model import Job
from tests.support.recording import Recording, embedded_backend
from worker.chunks import score_records


@pytest.fixture(scope="module")
def backend(tiny_model_root):
    with embedded_backend(tiny_model_root) as backend:
        yield backend


def _job(top_k: int) -> Job:
    return Job(id="j1", state="running", input="x", model="gru", top_k=top_k, chunk_size=100,
               created_at=time.time())


def test_lines_come_back_in_input_order_after_length_sorted_batches(backend, reuters46):
    texts = reuters46.test.texts()[:40]
    texts[3] = "Wheat"  # a very short text among newswire stories
    records = [{"id": f"doc-{i}", "text": text} for i, text in enumerate(texts)]
    recording = Recording(backend)
    top_k = 46  # every topic, so each line holds the whole probability vector

    lines, version = score_records(records, _job(top_k), recording, batch_size=8, running=lambda: True)

    assert version == 1
    rows = [json.loads(line) for line in lines]
    assert [row["id"] for row in rows] == [r["id"] for r in records]
    # the model saw the texts shortest first, in batches of 8
    seen = [text for call in recording.calls for text in call]
    assert seen == sorted(texts, key=len) and seen != texts
    assert [len(call) for call in recording.calls] == [8] * 5
    # each line holds its own document's answer: the same as scoring that text alone
    labels = backend.classify(texts[:1], "gru").labels
    for text, row in zip(texts, rows):
        alone = backend.classify([text], "gru").probabilities[0]
        got = np.zeros(len(labels))
        for topic in row["topics"]:
            got[labels.index(topic["name"])] = topic["probability"]
        np.testing.assert_allclose(got, alone, atol=5e-6)


def test_cancelled_chunk_returns_nothing(backend, reuters46, monkeypatch):
    monkeypatch.setattr("worker.chunks.CANCEL_CHECK_S", 0.0)
    records = [{"id": str(i), "text": t} for i, t in enumerate(reuters46.test.texts()[:20])]
    assert score_records(records, _job(3), backend, batch_size=4, running=lambda: False) == (None, None)
