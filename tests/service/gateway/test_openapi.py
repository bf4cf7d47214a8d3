"""The OpenAPI document is exact: every status a route documents is one it really sends (each is
made to happen here against real servers), and security is declared only when keys are set.
That no route sends a status it does not document is what the schemathesis run in test_fuzz checks."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from tests.support.model_roots import SAMPLE_TEXTS
from tests.support.processes import HOST, wait_for

pytestmark = pytest.mark.integration

KEY = "doc-key"
TEXT = SAMPLE_TEXTS[0]
JSON = {"content-type": "application/json"}


def documented(document: dict) -> dict[tuple[str, str], set[int]]:
    return {(method.upper(), path): {int(status) for status in operation["responses"]}
            for path, operations in document["paths"].items() for method, operation in operations.items()}


def test_security_and_401_only_with_keys(start_gateway, make_clients):
    open_doc = make_clients(start_gateway()).http.get("/openapi.json").json()
    assert "securitySchemes" not in open_doc.get("components", {})
    assert all("security" not in op and "401" not in op["responses"]
               for ops in open_doc["paths"].values() for op in ops.values())
    assert all("422" not in op["responses"] for ops in open_doc["paths"].values() for op in ops.values())
    keyed_doc = make_clients(start_gateway(api_keys=KEY)).http.get("/openapi.json").json()
    for path, operations in keyed_doc["paths"].items():
        for operation in operations.values():
            guarded = path.startswith("/v1/")
            assert ("security" in operation) == guarded and ("401" in operation["responses"]) == guarded, path


def test_every_documented_status_is_sent(start_gateway, slow_backend, job_manager, job_store, tmp_path):
    _, root = job_store
    gateway = start_gateway(backend=slow_backend, job_manager=job_manager, api_keys=KEY,
                            max_queued_documents=3, max_request_bytes=64 * 1024)
    http = httpx.Client(base_url=f"http://{HOST}:{gateway.http_port}", headers={"X-API-Key": KEY}, timeout=30)
    anonymous = httpx.Client(base_url=f"http://{HOST}:{gateway.http_port}", timeout=30)
    document = http.get("/openapi.json").json()
    (root / "data" / "news.jsonl").write_text(json.dumps({"id": "1", "text": TEXT}) + "\n")
    good = {"model": "gru", "documents": [{"text": TEXT}]}
    seen: dict[tuple[str, str], set[int]] = {}

    def note(method: str, path: str, response: httpx.Response) -> httpx.Response:
        seen.setdefault((method, path), set()).add(response.status_code)
        return response

    def call(method: str, path: str, client: httpx.Client = http, route: str | None = None, **kwargs):
        return note(method, route or path, client.request(method, path, **kwargs))

    # /v1/classify (the TF Serving double answers after a second, so requests can queue and time out)
    call("POST", "/v1/classify", json=good)
    call("POST", "/v1/classify", json={"model": "gru\n", "documents": [{"text": TEXT}]})
    call("POST", "/v1/classify", json={**good, "model": "nosuch"})
    call("POST", "/v1/classify", content=b"{" + b" " * 70_000 + b"}", headers=JSON)
    call("POST", "/v1/classify", json=good, headers={"X-Request-Timeout-Ms": "100"})
    call("POST", "/v1/classify", client=anonymous, json=good)
    holder = threading.Thread(target=http.post, args=("/v1/classify",),
                              kwargs={"json": {"model": "gru", "documents": [{"text": TEXT}] * 3}})
    holder.start()
    wait_for(lambda: gateway.core.batcher.queued_documents == 3, 10, "the first request admitted", step=0.01)
    call("POST", "/v1/classify", json=good)
    holder.join(10)
    # /v1/models, probes, metrics
    call("GET", "/v1/models")
    call("GET", "/v1/models", client=anonymous)
    call("GET", "/healthz")
    call("GET", "/readyz")
    call("GET", "/metrics")
    # /v1/jobs
    submitted = call("POST", "/v1/jobs", json={"input": str(root / "data" / "news.jsonl")}).json()
    newline = call("POST", "/v1/jobs", json={"input": str(root / "data" / "news.jsonl"), "model": "gru\n"})
    assert newline.status_code == 400 and "invalid model name" in newline.text
    surrogate = call("POST", "/v1/jobs", content=b'{"input": "/x\\ud800"}', headers=JSON)
    assert surrogate.status_code == 400 and "input is not valid Unicode" in surrogate.text
    call("POST", "/v1/jobs", json={"input": "/etc/hostname"})
    call("POST", "/v1/jobs", json={"input": str(root / "data" / "missing.jsonl")})
    call("POST", "/v1/jobs", content=b"{" + b" " * 70_000 + b"}", headers=JSON)
    call("POST", "/v1/jobs", client=anonymous, json={"input": "/x"})
    job = f"/v1/jobs/{submitted['id']}"
    call("GET", job, route="/v1/jobs/{job_id}")
    call("GET", "/v1/jobs/0123456789abcdef", route="/v1/jobs/{job_id}")
    call("GET", job, client=anonymous, route="/v1/jobs/{job_id}")
    call("DELETE", job, route="/v1/jobs/{job_id}")
    call("DELETE", job, route="/v1/jobs/{job_id}")
    call("DELETE", "/v1/jobs/0123456789abcdef", route="/v1/jobs/{job_id}")
    call("DELETE", job, client=anonymous, route="/v1/jobs/{job_id}")
    call("GET", "/v1/jobs")
    call("GET", "/v1/jobs", params={"limit": 0})
    call("GET", "/v1/jobs", client=anonymous)
    # Draining: not ready; then refusing: every API route answers 503.
    gateway.drain.start_draining()
    call("GET", "/readyz")
    gateway.drain.refuse()
    for method, path, route in (("POST", "/v1/classify", None), ("GET", "/v1/models", None),
                                ("POST", "/v1/jobs", None), ("GET", "/v1/jobs", None),
                                ("GET", job, "/v1/jobs/{job_id}"), ("DELETE", job, "/v1/jobs/{job_id}")):
        call(method, path, route=route, json={})
    http.close()
    anonymous.close()
    assert seen == documented(document)
