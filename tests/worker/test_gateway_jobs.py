"""The job API through the gateway's real gRPC and HTTP servers and the CLI."""

from __future__ import annotations

import json
import time

import grpc
import httpx
import pytest

from jobs.manager import JobManager
from jobs.settings import JobSettings
from scoring.backends.embedded import EmbeddedBackend
from scoring.settings import BackendSettings
from service.client import main as cli
from service.gateway import Gateway
from service.settings import GatewaySettings
from tests.support.inputs import NEWS, write_jsonl
from tests.support.processes import HOST, free_port, wait_for

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def backend(tiny_model_root):
    backend = EmbeddedBackend(BackendSettings(model_root=tiny_model_root))
    wait_for(backend.ready, 120, "the gateway's models", step=0.05)
    yield backend
    backend.close()


def start_gateway(backend, manager, model_root) -> Gateway:
    settings = GatewaySettings(model_root=model_root, host=HOST, shutdown_grace_s=1, shutdown_drain_s=0)
    return Gateway(backend, settings, manager, host=HOST, grpc_port=0, http_port=0)


@pytest.fixture(scope="module")
def gateway(backend, manager, tiny_model_root):
    gw = start_gateway(backend, manager, tiny_model_root)
    yield gw
    gw.stop(1)


@pytest.fixture
def http(gateway):
    with httpx.Client(base_url=f"http://{HOST}:{gateway.http_port}", timeout=10) as client:
        yield client


def wait_http(http: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    return wait_for(lambda: (lambda j: j if j["state"] in ("done", "failed", "cancelled") else None)(
        http.get(f"/v1/jobs/{job_id}").json()), timeout, f"job {job_id}", step=0.1)


def test_http_submit_get_list_and_errors(http, data_dir, tmp_path):
    write_jsonl(data_dir / "a.jsonl")
    answer = http.post("/v1/jobs", json={"input": str(data_dir / "a.jsonl"), "top_k": 2, "csv": True})
    assert answer.status_code == 202, answer.text
    job = wait_http(http, answer.json()["id"])
    assert job["state"] == "done" and job["docs_done"] == len(NEWS)
    with open(job["results_path"], encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    assert [len(r["topics"]) for r in rows] == [2] * len(NEWS)
    assert job["id"] in [j["id"] for j in http.get("/v1/jobs", params={"state": "done"}).json()["jobs"]]

    refused = http.post("/v1/jobs", json={"input": str(tmp_path)})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "PERMISSION_DENIED"
    missing = http.get("/v1/jobs/ffffffffffffffffffffffffffffffff")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    bad = http.post("/v1/jobs", json={"input": str(data_dir / "a.jsonl"), "top_k": 99})
    assert bad.status_code == 400 and "top_k" in bad.json()["error"]["message"]
    late = http.delete(f"/v1/jobs/{job['id']}")
    assert late.status_code == 409 and late.json()["error"]["code"] == "FAILED_PRECONDITION"
    assert http.get("/v1/jobs", params={"state": "sleeping"}).status_code == 400


def test_http_cancel(http, corpus_dir):
    job = http.post("/v1/jobs", json={"input": str(corpus_dir), "chunk_size": 100}).json()
    answer = http.delete(f"/v1/jobs/{job['id']}")
    assert answer.status_code == 200 and answer.json()["state"] == "cancelled"
    time.sleep(1.0)
    assert http.get(f"/v1/jobs/{job['id']}").json()["state"] == "cancelled"


def test_cli_over_grpc_submit_wait_status_cancel(gateway, data_dir, capsys):
    write_jsonl(data_dir / "b.jsonl", id_field="key", count=12)
    address = ["--address", f"{HOST}:{gateway.grpc_port}"]
    code = cli(["submit", str(data_dir / "b.jsonl"), "--id-field", "key", "--model", "rnn", "--csv",
                "--wait", "--interval", "0.1", *address])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "100% 12/12 docs" in err and "done" in out
    job_id = err.split("job ", 1)[1].split()[0]
    assert cli(["status", job_id, "--json", *address]) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["model"] == "rnn" and job["model_version"] == 1 and job["csv_path"].endswith(".csv")
    assert job["version"] is None and job["started_at"] is not None
    assert cli(["cancel", job_id, *address]) == 1
    assert "FAILED_PRECONDITION" in capsys.readouterr().err
    assert cli(["jobs", "--state", "done", *address]) == 0
    assert job_id in capsys.readouterr().out


def test_grpc_errors_carry_the_right_codes(gateway, tmp_path):
    from service.protos import jobs_pb2 as pb
    from service.protos import jobs_pb2_grpc as pb_grpc
    with grpc.insecure_channel(f"{HOST}:{gateway.grpc_port}") as channel:
        stub = pb_grpc.JobsStub(channel)
        for request, code in [(pb.SubmitJobRequest(input=str(tmp_path)), grpc.StatusCode.PERMISSION_DENIED),
                              (pb.SubmitJobRequest(input="relative"), grpc.StatusCode.INVALID_ARGUMENT),
                              (pb.SubmitJobRequest(input=str(tmp_path), format="xml"),
                               grpc.StatusCode.INVALID_ARGUMENT)]:
            with pytest.raises(grpc.RpcError) as caught:
                stub.SubmitJob(request, timeout=10)
            assert caught.value.code() == code, caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetJob(pb.GetJobRequest(id="nope"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_redis_unreachable_is_503_and_unavailable(backend, job_root, data_dir, tiny_model_root, capsys):
    write_jsonl(data_dir / "c.jsonl")
    dead = JobManager(JobSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_s=0.5,
                                  allowed_roots=[str(job_root / "data")]))
    gw = start_gateway(backend, dead, tiny_model_root)
    try:
        answer = httpx.post(f"http://{HOST}:{gw.http_port}/v1/jobs", json={"input": str(data_dir / "c.jsonl")},
                            timeout=10)
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "UNAVAILABLE"
        assert "Redis at redis://127.0.0.1:" in answer.json()["error"]["message"]
        assert cli(["status", "abc", "--address", f"{HOST}:{gw.grpc_port}"]) == 1
        assert "error: UNAVAILABLE: job store (Redis at" in capsys.readouterr().err
    finally:
        gw.stop(1)


def test_api_answers_and_batch_rows_agree_field_by_field(http, data_dir):
    """One ranking serves both paths: the same documents give the same rows through each."""
    ids = write_jsonl(data_dir / "same.jsonl")
    submitted = http.post("/v1/jobs", json={"input": str(data_dir / "same.jsonl"), "model": "gru", "top_k": 3})
    job = wait_http(http, submitted.json()["id"])
    assert job["state"] == "done", job["error"]
    with open(job["results_path"], encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    answer = http.post("/v1/classify", json={"model": "gru", "top_k": 3, "documents": [
        {"id": doc_id, "text": NEWS[i]} for i, doc_id in enumerate(ids)]}).json()
    assert len(rows) == len(answer["results"]) == len(ids)
    for row, result in zip(rows, answer["results"]):
        assert set(row) == set(result) | {"model", "version"}
        assert (row["id"], row["abstained"], row["model"], row["version"]) == (
            result["id"], result["abstained"], answer["model"], answer["version"])
        assert [t["name"] for t in row["topics"]] == [t["name"] for t in result["topics"]]
        assert [t["probability"] for t in row["topics"]] == pytest.approx(
            [t["probability"] for t in result["topics"]], abs=1e-6)


def _rounded(value):
    """Floats to 5 digits: gRPC carries probabilities and thresholds as 32-bit floats."""
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def test_both_client_transports_answer_in_the_same_shapes(gateway, data_dir):
    from service.client.transport import GrpcTransport, HttpTransport

    write_jsonl(data_dir / "c.jsonl")
    with GrpcTransport(f"{HOST}:{gateway.grpc_port}") as grpc_client, \
            HttpTransport(f"{HOST}:{gateway.http_port}") as http_client:
        job = grpc_client.submit_job({"input": str(data_dir / "c.jsonl"), "model": "rnn", "version_label": None})
        wait_for(lambda: http_client.get_job(job["id"])["state"] == "done", 60, "the job", step=0.1)
        assert grpc_client.get_job(job["id"]) == http_client.get_job(job["id"])
        assert grpc_client.list_jobs(5) == http_client.list_jobs(5)
        assert _rounded(grpc_client.models()) == _rounded(http_client.models())
        documents = [{"id": "a", "text": NEWS[0]}, {"id": "b", "text": NEWS[2]}]
        assert _rounded(grpc_client.classify(documents, "gru", top_k=4)) == _rounded(
            http_client.classify(documents, "gru", top_k=4))


def test_unusable_paths_are_400_and_invalid_argument(gateway, http, data_dir):
    from service.protos import jobs_pb2 as pb
    from service.protos import jobs_pb2_grpc as pb_grpc
    for spec in (f"{data_dir}/a\x00b.jsonl", f"{data_dir}/a\nb.jsonl"):
        answer = http.post("/v1/jobs", json={"input": spec})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "INVALID_ARGUMENT" and "input" in answer.json()["error"]["message"]
    with grpc.insecure_channel(f"{HOST}:{gateway.grpc_port}") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.JobsStub(channel).SubmitJob(pb.SubmitJobRequest(input=f"{data_dir}/a\x00b.jsonl"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()


def test_idempotency_key_over_http_and_grpc(gateway, http, data_dir):
    from service.protos import jobs_pb2 as pb
    from service.protos import jobs_pb2_grpc as pb_grpc
    write_jsonl(data_dir / "a.jsonl")
    body = {"input": str(data_dir / "a.jsonl"), "idempotency_key": "retry-me"}
    first, again = (http.post("/v1/jobs", json=body) for _ in range(2))
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    with grpc.insecure_channel(f"{HOST}:{gateway.grpc_port}") as channel:
        request = pb.SubmitJobRequest(input=str(data_dir / "a.jsonl"), idempotency_key="retry-me")
        assert pb_grpc.JobsStub(channel).SubmitJob(request, timeout=10).id == first.json()["id"]
    reused = http.post("/v1/jobs", json=body | {"top_k": 1})
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "FAILED_PRECONDITION"
