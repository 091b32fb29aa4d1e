"""Prometheus metrics of one server, in a registry of its own (``GET /metrics``).

Counts by state and the queue depth are read from the store at scrape time, so
they stay true across restarts; step and job durations are histograms the
workers feed; accelerator memory is read from torch per worker device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from .store import STATES, JobStore

STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
JOB_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class _Live:
    """Gauges computed when scraped: jobs by state, queue depth, ready workers, accelerator memory."""

    def __init__(self, store: JobStore, workers: Callable[[], Sequence[Any]]):
        self.store, self.workers = store, workers

    def collect(self) -> Iterable[GaugeMetricFamily]:
        counts = self.store.counts()
        depth = GaugeMetricFamily("vidcore_queue_depth", "Jobs waiting for a worker")
        depth.add_metric([], counts["queued"])
        yield depth
        jobs = GaugeMetricFamily("vidcore_jobs", "Jobs in the store by state", labels=["state"])
        for state in STATES:
            jobs.add_metric([state], counts[state])
        yield jobs
        workers = list(self.workers())
        ready = GaugeMetricFamily("vidcore_workers_ready", "Workers with their pipelines loaded")
        ready.add_metric([], sum(1 for w in workers if w.ready))
        yield ready
        memory = GaugeMetricFamily("vidcore_accelerator_memory_bytes", "Accelerator memory held by torch",
                                   labels=["device", "kind"])
        for device in sorted({str(w.device) for w in workers if str(w.device).startswith("cuda")}):
            import torch

            memory.add_metric([device, "allocated"], torch.cuda.memory_allocated(device))
            memory.add_metric([device, "reserved"], torch.cuda.memory_reserved(device))
            memory.add_metric([device, "peak"], torch.cuda.max_memory_allocated(device))
        yield memory


class Metrics:
    def __init__(self, store: JobStore, workers: Callable[[], Sequence[Any]]):
        self.registry = CollectorRegistry()
        self.step_seconds = Histogram("vidcore_step_seconds", "Seconds per denoising step", ["model"],
                                      buckets=STEP_BUCKETS, registry=self.registry)
        self.job_seconds = Histogram("vidcore_job_seconds", "Seconds from a job's start to its end", ["model"],
                                     buckets=JOB_BUCKETS, registry=self.registry)
        self.finished = Counter("vidcore_jobs_finished", "Jobs that ended in this process, by outcome", ["outcome"],
                                registry=self.registry)
        self.registry.register(_Live(store, workers))
