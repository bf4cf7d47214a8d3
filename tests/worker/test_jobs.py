"""Jobs end to end: a real redis-server, a real `celery worker` subprocess, the tiny SavedModels."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from jobs.manager import JobManager
from jobs.model import JobPaths, JobRequest
from jobs.settings import JobSettings
from scoring.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unavailable
from tests.support.inputs import (
    NEWS,
    add_to_tar,
    add_to_zip,
    bad_jsonl,
    news_files,
    write_csv,
    write_jsonl,
    write_txt_folder,
)
from tests.support.processes import free_port, wait_for
from tests.worker.helpers import wait_finished
from training.corpus import read_corpus

pytestmark = pytest.mark.integration


def result_rows(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def assert_exactly_once(rows: list[dict], expected: list[str]) -> None:
    counts = Counter(row["id"] for row in rows)
    duplicated = [doc_id for doc_id, n in counts.items() if n > 1]
    assert not duplicated, f"{len(duplicated)} ids scored twice, e.g. {duplicated[:5]}"
    assert set(counts) == set(expected), f"missing {sorted(set(expected) - set(counts))[:5]}"


@pytest.fixture(scope="module")
def corpus_ids(corpus_dir) -> list[str]:
    return [str(doc.newid) for doc in read_corpus(corpus_dir)]


@pytest.mark.slow
def test_whole_corpus_every_newid_exactly_once_in_input_order(manager, corpus_dir, corpus_ids):
    job = manager.submit({"input": str(corpus_dir), "model": "gru", "top_k": 2, "csv": True})
    assert job.state == "queued"
    job = wait_finished(manager, job.id, timeout=180)
    assert job.state == "done", job.error
    rows = result_rows(job.results_path)
    errors = result_rows(job.errors_path)
    # The corpus holds one story with no text at all; it is reported, every other one scored.
    assert [(e["id"], e["reason"]) for e in errors] == [("12793", "empty text")]
    assert [r["id"] for r in rows] == [i for i in corpus_ids if i != "12793"]
    assert_exactly_once(rows + errors, corpus_ids)
    assert (job.docs_total, job.docs_done, job.errors) == (21577, 21577, 1)
    assert job.chunks_done == job.chunks_total == 6 and job.model_version == 1  # chunks of 4,000
    row = rows[0]
    assert row["model"] == "gru" and row["version"] == 1 and len(row["topics"]) == 2
    assert isinstance(row["abstained"], bool) and set(row["topics"][0]) == {"name", "probability"}
    probabilities = [t["probability"] for t in row["topics"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < probabilities[0] <= 1
    with open(job.csv_path, newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["id", "model", "version", "abstained", "topic_1", "probability_1", "topic_2",
                        "probability_2"]
    assert [r[0] for r in table[1:]] == [r["id"] for r in rows]
    assert job.started_at and job.finished_at and job.read_s > 0 and job.score_s > 0
    parts = Path(job.results_path).parent / "parts"
    assert not parts.exists(), "parts are removed once merged"


def test_every_format_and_archive_end_to_end(manager, data_dir, corpus_dir):
    write_jsonl(data_dir / "lines.jsonl", id_field="doc_id", text_field="body")
    write_csv(data_dir / "table.csv", id_col="key", text_col="story")
    txt_ids = write_txt_folder(data_dir / "stories")
    add_to_tar(data_dir / "wire.tar.gz", {"x/reut2-002.sgm": (corpus_dir / "reut2-002.sgm").read_bytes()})
    add_to_zip(data_dir / "stories.zip", news_files("z/"))
    add_to_tar(data_dir / "lines.tgz", {"in.jsonl": (data_dir / "lines.jsonl").read_bytes()})
    (data_dir / "globbed").mkdir()
    for name in ("a", "b"):
        write_jsonl(data_dir / "globbed" / f"{name}.jsonl")
    cases = {
        "jsonl": ({"input": str(data_dir / "lines.jsonl"), "id_field": "doc_id", "text_field": "body"},
                  [f"j{i}" for i in range(len(NEWS))]),
        "csv": ({"input": str(data_dir / "table.csv"), "id_field": "key", "text_field": "story"},
                [f"c{i}" for i in range(len(NEWS))]),
        "txt": ({"input": str(data_dir / "stories")}, txt_ids),
        "tar-sgm": ({"input": str(data_dir / "wire.tar.gz"), "chunk_size": 300},
                    [str(n) for n in range(2001, 3001)]),
        "zip-txt": ({"input": str(data_dir / "stories.zip")}, [f"z/story{i}.txt" for i in range(len(NEWS))]),
        "tgz-jsonl": ({"input": str(data_dir / "lines.tgz"), "format": "jsonl", "id_field": "doc_id",
                       "text_field": "body", "model": "rnn"}, [f"j{i}" for i in range(len(NEWS))]),
        "glob": ({"input": str(data_dir / "globbed" / "*.jsonl")}, [f"j{i}" for i in range(len(NEWS))] * 2),
    }
    submitted = {name: manager.submit(request) for name, (request, _) in cases.items()}
    for name, (request, expected) in cases.items():
        job = wait_finished(manager, submitted[name].id)
        assert job.state == "done", f"{name}: {job.error}"
        rows = result_rows(job.results_path)
        assert [r["id"] for r in rows] == expected, name
        assert {r["model"] for r in rows} == {request.get("model", "gru")}
        assert job.errors == 0 and job.docs_done == len(expected)
    assert submitted["tar-sgm"].chunk_size == 300
    assert manager.get(submitted["tar-sgm"].id).chunks_total == 4


def test_bad_records_go_to_the_errors_file_and_are_counted(manager, data_dir):
    good, bad = bad_jsonl(data_dir / "mixed.jsonl")
    (data_dir / "mixed.csv").write_bytes(b"id,text\nok,fine news\nshort\nb,caf\xe9\n")
    job = wait_finished(manager, manager.submit({"input": str(data_dir / "mixed.jsonl")}).id)
    assert job.state == "done"
    assert [r["id"] for r in result_rows(job.results_path)] == good
    errors = result_rows(job.errors_path)
    assert job.errors == len(bad) == len(errors)
    for error in errors:
        where = error["source"][len("mixed.jsonl"):]
        assert bad[where] in error["reason"]
    job = wait_finished(manager, manager.submit({"input": str(data_dir / "mixed.csv")}).id)
    assert [r["id"] for r in result_rows(job.results_path)] == ["ok"]
    assert sorted(e["reason"] for e in result_rows(job.errors_path)) == [
        "not valid UTF-8", "row has 1 fields, header has 2"]


@pytest.mark.parametrize("entry", ["../escape.txt", "/tmp/absolute.txt"], ids=["dotdot", "absolute"])
def test_malicious_archive_is_refused(manager, data_dir, entry):
    add_to_tar(data_dir / "evil.tar.gz", {"fine.txt": b"news", entry: b"payload"})
    add_to_zip(data_dir / "evil.zip", {"fine.txt": b"news", entry: b"payload"})
    # Archives are listed by the worker, not at submit: the job fails, saying why.
    for archive in ("evil.tar.gz", "evil.zip"):
        job = wait_finished(manager, manager.submit({"input": str(data_dir / archive)}).id)
        assert job.state == "failed" and "PermissionDenied" in job.error and "refused: entry" in job.error
        paths = JobPaths.of(manager.settings, job.id)
        assert not paths.scratch.exists() and not (paths.results / "parts").exists()
    assert not (data_dir.parent / "escape.txt").exists()


def test_inputs_outside_the_allowed_roots_are_refused(manager, data_dir, tmp_path):
    (tmp_path / "private.jsonl").write_text('{"id": 1, "text": "secret"}\n')
    (data_dir / "link").symlink_to(tmp_path)
    before = len(manager.list(limit=1000))
    for spec in [str(tmp_path / "private.jsonl"), "/etc/passwd",
                 str(data_dir / ".." / ".." / ".." / "private.jsonl"), str(data_dir / "link" / "private.jsonl")]:
        with pytest.raises(PermissionDenied, match="outside the allowed roots"):
            manager.submit({"input": spec})
    assert len(manager.list(limit=1000)) == before, "a refused input must not leave a job behind"


def test_request_validation_unknown_job_and_unknown_model(manager, data_dir):
    write_jsonl(data_dir / "a.jsonl")
    for bad in [{"input": str(data_dir / "a.jsonl"), "top_k": 0},
                {"input": str(data_dir / "a.jsonl"), "model": "Bad Name"},
                {"input": str(data_dir / "a.jsonl"), "format": "xml"},
                {"input": "relative.jsonl"}, {}]:
        with pytest.raises(InvalidArgument):
            manager.submit(bad)
    with pytest.raises(NotFound):
        manager.get("0123456789abcdef")
    with pytest.raises(NotFound):
        manager.cancel("no-such-job")
    job = wait_finished(manager, manager.submit(JobRequest(input=str(data_dir / "a.jsonl"),
                                                           model="nosuchmodel")).id)
    assert job.state == "failed" and "NotFound" in job.error and "nosuchmodel" in job.error
    with pytest.raises(FailedPrecondition, match="already failed"):
        manager.cancel(job.id)
    assert job.id in [j.id for j in manager.list(limit=100)]


def test_cancel_stops_the_remaining_chunks(manager, corpus_dir):
    job = manager.submit({"input": str(corpus_dir), "chunk_size": 100})
    wait_for(lambda: manager.get(job.id).chunks_done >= 1, 60, "the first chunk")
    cancelled = manager.cancel(job.id)
    assert cancelled.state == "cancelled" and cancelled.finished_at
    total = manager.get(job.id).chunks_total
    # Whatever was queued drains without counting: the progress freezes below the total.
    wait_for(lambda: manager.store.redis.llen(manager.settings.queue) == 0, 60, "the queue to drain",
             step=0.2)
    time.sleep(0.5)  # the chunk in hand when the queue emptied
    after = manager.get(job.id)
    assert after.state == "cancelled"
    assert after.chunks_done < total and after.docs_done < after.docs_total
    assert not Path(after.results_path or "/nonexistent").exists()
    paths = JobPaths.of(manager.settings, job.id)
    assert not paths.scratch.exists() and not (paths.results / "parts").exists(), "cancelled work is discarded"
    with pytest.raises(FailedPrecondition, match="already cancelled"):
        manager.cancel(job.id)


def test_redis_unreachable_is_a_clear_unavailable_error(job_root, data_dir):
    write_jsonl(data_dir / "a.jsonl")
    settings = JobSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_s=0.5,
                           allowed_roots=[str(job_root / "data")])
    manager = JobManager(settings)
    for call in (lambda: manager.submit({"input": str(data_dir / "a.jsonl")}),
                 lambda: manager.get("abc"), lambda: manager.list()):
        with pytest.raises(Unavailable, match=r"Redis at redis://127\.0\.0\.1:\d+/0\) is unreachable"):
            call()
