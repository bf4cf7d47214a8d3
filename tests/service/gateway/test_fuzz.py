"""Bounded fuzzing of both front ends with fixed seeds: mutated, random and odd-valued gRPC
messages on every method, and schemathesis cases (valid and invalid) on every HTTP route. The bar:
no INTERNAL or UNKNOWN, no 5xx but the 504 of a client's own millisecond deadline, and every answer
as documented."""

from __future__ import annotations

import random
from collections import Counter

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.openapi import from_url
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.grpc_api.jobs import pb as jobs_pb
from service.protos import classifier_pb2 as pb
from tests.support.model_roots import SAMPLE_TEXTS
from tests.support.processes import HOST

pytestmark = pytest.mark.integration

SEED = 20261201
GRPC_MESSAGES = 1200
HTTP_CASES_PER_OPERATION = 140  # x 2 modes, on the 5 operations with parameters: over 1,000 cases
NEVER = {"INTERNAL", "UNKNOWN"}
ODD_TEXT = ["", " ", "\x00", "\u202e", "\U0001F600" * 3, "a" * 5000, "é" * 10, "\n\t", "<script>", "%s%n"]


def random_text(rng: random.Random) -> str:
    if rng.random() < 0.4:
        return rng.choice(ODD_TEXT + SAMPLE_TEXTS)
    alphabet = [chr(rng.choice([rng.randrange(32, 127), rng.randrange(0xA0, 0xD7FF), rng.randrange(0xE000, 0x10FFFF)]))
                for _ in range(rng.randrange(1, 40))]
    return "".join(alphabet)


def random_int(rng: random.Random, bits: int) -> int:
    return rng.choice([0, 1, -1, 3, 46, 47, 2 ** (bits - 1) - 1, -(2 ** (bits - 1)), rng.randrange(-1000, 1000)])


def odd_request(rng: random.Random) -> pb.ClassifyRequest:
    """A well-formed message with values from the edges of each field's range."""
    request = pb.ClassifyRequest(model=rng.choice(["gru", "rnn", "ensemble", "GRU", "gru\n", "", "../x", random_text(rng)]),
                                 top_k=rng.choice([0, 1, 3, 46, 47, 2 ** 32 - 1, rng.randrange(1000)]))
    for _ in range(rng.choice([0, 1, 2, 5, 300])):
        request.documents.add(text=random_text(rng), id=random_text(rng))
    choice = rng.random()
    if choice < 0.3:
        request.version = random_int(rng, 64)
    elif choice < 0.5:
        request.version_label = rng.choice(["stable", "", "x" * 10_000, random_text(rng)])
    return request


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        kind = rng.random()
        if kind < 0.4 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind < 0.6:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        elif kind < 0.8 and data:
            del data[rng.randrange(len(data))]
        else:
            data = data[:rng.randrange(len(data) + 1)]
    return bytes(data)


def fuzz_message(rng: random.Random, valid: bytes) -> bytes:
    kind = rng.random()
    if kind < 0.35:
        return mutate(rng, valid)
    if kind < 0.6:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
    return odd_request(rng).SerializeToString()


def test_grpc_fuzz(start_gateway, job_manager):
    gateway = start_gateway(job_manager=job_manager, max_documents=256)
    rng = random.Random(SEED)
    codes: Counter[str] = Counter()
    valid = pb.ClassifyRequest(model="gru", top_k=3, documents=[pb.Document(text=SAMPLE_TEXTS[0], id="a")],
                               version=1).SerializeToString()
    jobs_valid = {
        "SubmitJob": jobs_pb.SubmitJobRequest(input="/nowhere/news.jsonl", model="gru").SerializeToString(),
        "GetJob": jobs_pb.GetJobRequest(id="0123456789abcdef").SerializeToString(),
        "CancelJob": jobs_pb.CancelJobRequest(id="0123456789abcdef").SerializeToString(),
        "ListJobs": jobs_pb.ListJobsRequest(limit=5, state="queued").SerializeToString(),
    }
    with grpc.insecure_channel(f"{HOST}:{gateway.grpc_port}") as channel:
        def unary(method: str, data: bytes) -> None:
            try:
                channel.unary_unary(method)(data, timeout=30)
                codes["OK"] += 1
            except grpc.RpcError as exc:
                codes[exc.code().name] += 1

        sent = 0
        while sent < GRPC_MESSAGES:
            pick = rng.random()
            if pick < 0.6:
                unary("/newsclf.v1.Classifier/Classify", fuzz_message(rng, valid))
                sent += 1
            elif pick < 0.65:
                unary("/newsclf.v1.Classifier/ListModels", mutate(rng, b""))
                sent += 1
            elif pick < 0.85:
                name = rng.choice(sorted(jobs_valid))
                unary(f"/newsclf.v1.Jobs/{name}", mutate(rng, jobs_valid[name]) if rng.random() < 0.7
                      else bytes(rng.randrange(256) for _ in range(rng.randrange(64))))
                sent += 1
            else:
                messages = [fuzz_message(rng, valid) for _ in range(rng.randrange(1, 12))]
                stream = channel.stream_stream("/newsclf.v1.Classifier/ClassifyStream",
                                               response_deserializer=pb.ClassifyStreamResponse.FromString)
                answers = list(stream(iter(messages), timeout=60))
                assert [a.sequence for a in answers] == list(range(len(messages)))  # the stream went on
                codes.update(a.error.code if a.WhichOneof("outcome") == "error" else "OK" for a in answers)
                sent += len(messages)
    assert sum(codes.values()) >= GRPC_MESSAGES
    assert not NEVER & set(codes), codes
    print(f"gRPC fuzz: {sum(codes.values())} messages, codes {dict(codes)}")
    assert codes["INVALID_ARGUMENT"] > 100 and codes["OK"] > 50, codes  # both kinds were really reached


def test_schemathesis(start_gateway, job_manager):
    gateway = start_gateway(job_manager=job_manager)
    base_url = f"http://{HOST}:{gateway.http_port}"
    schema = from_url(f"{base_url}/openapi.json")
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]  # 5xx: below
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 9
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=HTTP_CASES_PER_OPERATION, derandomize=True, database=None, deadline=None,
                      suppress_health_check=list(HealthCheck))
            def run(case) -> None:
                response = case.call(base_url=base_url)
                statuses[response.status_code] += 1
                if response.status_code >= 500:  # only the client's own tiny deadline may run out here
                    deadline = (case.headers or {}).get("X-Request-Timeout-Ms")
                    assert response.status_code == 504 and float(deadline) < 1000, (case.path, response.text)
                case.validate_response(response, checks=checks)

            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # a route without parameters has no invalid input
    print(f"schemathesis: {sum(statuses.values())} cases, statuses {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= 1000, statuses
