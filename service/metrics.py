"""Prometheus metrics of one gateway, in its own registry.

A registry per gateway (rather than prometheus-client's global one) lets several gateways live
in one process, as they do in the tests, without clashing metric names.  A gateway serving gRPC
from several processes (``NEWSCLF_GRPC_PROCESSES``) keeps its figures in prometheus-client's
multiprocess files instead, so the one ``/metrics`` sums what every process answered.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from jobs.store import JobStore
from scoring.errors import Unavailable

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def share_between_processes(folder: Path) -> None:
    """Keep every metric of this process in ``folder``'s files, where ``/metrics`` of any process
    sharing the folder reads them all; call it before creating ``Metrics(shared=folder)``.

    prometheus-client reads the folder from ``PROMETHEUS_MULTIPROC_DIR`` and picks its value
    class at import, so both are set here, for this process and the ones it starts.
    """
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    values.ValueClass = values.MultiProcessValue()


class Metrics:
    """Requests by model/version/status, latencies, batch sizes and queue depth."""

    def __init__(self, registry: CollectorRegistry | None = None, shared: Path | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.shared = shared
        self._collectors: list = []
        r = self.registry
        self.requests = Counter("newsclf_requests", "Classification requests answered, by outcome.",
                                ["transport", "method", "model", "version", "status"], registry=r)
        self.documents = Counter("newsclf_documents", "Documents classified.", ["model", "version"], registry=r)
        self.abstained = Counter("newsclf_abstained_documents", "Documents answered below the abstain threshold.",
                                 ["model", "version"], registry=r)
        self.latency = Histogram("newsclf_request_latency_seconds", "Time from request to answer in the gateway core.",
                                 ["transport", "method", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.backend_latency = Histogram("newsclf_backend_latency_seconds", "Duration of one backend call (one batch).",
                                         ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_documents = Histogram("newsclf_batch_documents", "Documents per backend call.",
                                         ["model"], buckets=SIZE_BUCKETS, registry=r)
        self.batch_requests = Histogram("newsclf_batch_requests", "Requests merged into one backend call.",
                                        ["model"], buckets=SIZE_BUCKETS, registry=r)
        self.queue_depth = Gauge("newsclf_queued_documents", "Documents admitted and not yet answered.", registry=r,
                                 multiprocess_mode="livesum")

    def watch_jobs(self, store: JobStore) -> None:
        """Add the batch jobs' figures, read from Redis at each scrape (so every gateway
        reports the same fleet-wide values, whichever one Prometheus asks)."""
        collector = JobsCollector(store)
        self._collectors.append(collector)
        self.registry.register(collector)

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type, for ``GET /metrics``."""
        if self.shared is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.shared))
        for collector in self._collectors:
            registry.register(collector)
        return generate_latest(registry), CONTENT_TYPE_LATEST


class JobsCollector:
    """Jobs by state, the Celery queue's length and documents scored by the workers."""

    def __init__(self, store: JobStore):
        self.store = store

    def collect(self):
        up = GaugeMetricFamily("newsclf_job_store_up", "1 when the job store (Redis) answered this scrape.")
        try:
            states, waiting, documents = self.store.stats()
        except Unavailable:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("newsclf_jobs", "Jobs known to the job store, by state.", labels=["state"])
        for state, count in states.items():
            jobs.add_metric([state], count)
        yield jobs
        yield GaugeMetricFamily("newsclf_job_queue_length", "Tasks (job chunks) waiting in the Celery queue.",
                                value=waiting)
        yield CounterMetricFamily("newsclf_job_documents", "Documents scored by the batch workers, all jobs.",
                                  value=documents)
