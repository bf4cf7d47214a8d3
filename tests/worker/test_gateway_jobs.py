"""The job API through the gateway's real gRPC and HTTP servers and the CLI."""

from __future__ import annotations

import json
import time

import grpc
import httpx
import pytest

from service.backends.embedded import EmbeddedBackend
from service.client import main as cli
from service.gateway import Gateway
from service.settings import BackendSettings, GatewaySettings
from tests.support.processes import HOST, free_port, wait_for
from tests.worker.inputs import NEWS, write_jsonl
from worker.jobs import JobManager
from worker.settings import JobSettings

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def backend(tiny_model_root):
    backend = EmbeddedBackend(BackendSettings(model_root=tiny_model_root))
    wait_for(backend.ready, 120, "the gateway's models", step=0.05)
    yield backend
    backend.close()


def start_gateway(backend, manager, model_root) -> Gateway:
    settings = GatewaySettings(model_root=model_root, host=HOST, shutdown_grace_s=1)
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
    from service.protos import load
    pb, pb_grpc = load("jobs_pb2"), load("jobs_pb2_grpc")
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
