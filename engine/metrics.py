"""Prometheus metrics of one engine app, in its own registry (no process-global state).

Under several engine processes (:mod:`engine.serve` sets ``PROMETHEUS_MULTIPROC_DIR`` before starting
them) every value also lands in that directory and :meth:`Metrics.render` reports the sum over the
processes: counts and histograms add up, the in-flight gauge sums, the up/down gauges show the worst
process, and the bundle gauge keeps one series per process (``pid`` label).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """Request counts and latencies by endpoint, cache hits/misses, bundle version, Redis state."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self._version: str | None = None
        r = self.registry
        self.requests = Counter(
            "engine_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "engine_request_seconds", "Request latency by endpoint", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.cache_hits = Counter("engine_cache_hits", "Answers served from the cache", ["endpoint"],
                                  registry=r)
        self.cache_misses = Counter("engine_cache_misses", "Answers computed", ["endpoint"], registry=r)
        self.coalesced = Counter("engine_cache_coalesced", "Misses that joined an identical computation",
                                 ["endpoint"], registry=r)
        self.busy = Counter("engine_busy_rejections", "Requests refused because a pool's queue was full",
                            ["pool"], registry=r)
        self.abandoned = Counter("engine_abandoned", "Requests cancelled (client gone) before or during work",
                                 ["pool"], registry=r)
        self.reloads = Counter("engine_reloads", "Bundle load attempts by result", ["result"], registry=r)
        self.bundle = Gauge("engine_bundle_info", "The bundle being served (value 1)", ["version"],
                            registry=r, multiprocess_mode="liveall")
        self.redis_up = Gauge("engine_redis_up", "1 when Redis answers, 0 when down, -1 when not configured",
                              registry=r, multiprocess_mode="livemin")
        self.inflight = Gauge("engine_inflight", "Requests waiting for or holding a worker", ["pool"],
                              registry=r, multiprocess_mode="livesum")
        self.encode_batch = Histogram("engine_encode_batch_size", "Images per encoder (ONNX Runtime) call",
                                      buckets=BATCH_BUCKETS, registry=r)
        self.query_batch = Histogram("engine_query_batch_size",
                                     "Text queries answered by one matrix product (engine.querybatch)",
                                     buckets=BATCH_BUCKETS, registry=r)
        self.encode_seconds = Histogram("engine_encode_batch_seconds", "Duration of one encoder call",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.bus_up = Gauge("engine_bundle_bus_up",
                            "1 while subscribed to bundle announcements, 0 when not, -1 when not configured",
                            registry=r, multiprocess_mode="livemin")
        self.announcements = Counter("engine_bundle_announcements", "Bundle announcements by direction",
                                     ["direction"], registry=r)
        self.redis_up.set(-1)
        self.bus_up.set(-1)
        self._requests: dict[tuple[str, int], Any] = {}
        self._latency: dict[str, Any] = {}
        self._cache: dict[tuple[str, bool], Any] = {}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one request and record its latency (labelled children cached: this runs per request)."""
        key = (endpoint, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(endpoint=endpoint, status=str(status))
        histogram = self._latency.get(endpoint)
        if histogram is None:
            histogram = self._latency[endpoint] = self.latency.labels(endpoint=endpoint)
        counter.inc()
        histogram.observe(seconds)

    def cache_result(self, endpoint: str, hit: bool) -> None:
        """Count a cache hit or miss."""
        key = (endpoint, hit)
        counter = self._cache.get(key)
        if counter is None:
            family = self.cache_hits if hit else self.cache_misses
            counter = self._cache[key] = family.labels(endpoint=endpoint)
        counter.inc()

    def set_bundle(self, version: str | None) -> None:
        """Record the served version (one labelled series at a time; 0 for earlier ones across processes,
        whose values live in files that clearing this process's series would not reach)."""
        if self.multiprocess_dir is None:
            self.bundle.clear()
        elif self._version is not None and self._version != version:
            self.bundle.labels(version=self._version).set(0)
        self._version = version
        if version is not None:
            self.bundle.labels(version=version).set(1)

    def render(self) -> bytes:
        """The Prometheus text exposition (of every engine process, under several)."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)
