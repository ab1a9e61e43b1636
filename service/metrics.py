"""Prometheus metrics (prometheus-client), and the /metrics resource.

With several uvicorn workers, set PROMETHEUS_MULTIPROC_DIR to an empty directory (the container
does): each worker then writes its samples there and /metrics, whichever worker answers, adds up
all of them. Without it, each process reports its own.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BYTE_BUCKETS = tuple(2**power for power in range(10, 27, 2))  # 1 KiB .. 64 MiB


class Metrics:
    """Every metric the service exports, in a registry of its own (no global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "asgilook_http_requests", "HTTP requests answered.",
            ["method", "route", "status"], registry=registry,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "asgilook_http_request_duration_seconds", "Time to answer, body streaming excluded.",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "asgilook_http_requests_in_flight", "Requests being answered.",
            multiprocess_mode="livesum", registry=registry,
        )  # fmt: skip
        self.render_seconds = Histogram(
            "asgilook_image_render_seconds", "CPU work on images: uploads, thumbnails.",
            ["operation"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.overloaded = Counter(
            "asgilook_image_work_refused", "Image work refused with a 503: the queue was full.",
            registry=registry,
        )  # fmt: skip
        self.upload_bytes = Histogram(
            "asgilook_upload_bytes", "Sizes of the upload bodies received.",
            buckets=BYTE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.cache_lookups = Counter(
            "asgilook_cache_lookups", "Response cache lookups by result: hit or miss.",
            ["result"], registry=registry,
        )  # fmt: skip
        self.cache_errors = Counter(
            "asgilook_cache_errors", "Redis commands that failed (the cache is then skipped).",
            registry=registry,
        )  # fmt: skip
        self.orphans_removed = Counter(
            "asgilook_orphans_removed", "Images whose unfinished upload or delete the janitor "
            "cleaned up.", registry=registry,
        )  # fmt: skip
        self.event_subscribers = Gauge(
            "asgilook_event_subscribers", "Clients connected to /events.",
            multiprocess_mode="livesum", registry=registry,
        )  # fmt: skip
        self.s3_seconds = Histogram(
            "asgilook_s3_request_duration_seconds", "S3 calls, retries included.",
            ["operation"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.s3_errors = Counter(
            "asgilook_s3_errors", "S3 calls that failed, after retries.",
            ["operation"], registry=registry,
        )  # fmt: skip

        # NOTE: counts a request adds, kept here until the next turn of the event loop (see add()).
        self._pending: dict[Counter | Gauge, float] = {}

    def add(self, metric: Counter | Gauge, amount: float = 1) -> None:
        """Add to a counter or a gauge (a child of its labels) at the next turn of the event loop,
        in one update with the other additions to it in that turn.

        In multiprocess mode, each update of a value is a lock and a write to a memory-mapped
        file; a cache hit made five of them (6-8 us of its 21-27 in process). A scrape adds what is
        pending first, so that it sees every request before its own.
        """
        pending = self._pending
        if not pending:
            try:
                asyncio.get_running_loop().call_soon(self._add_pending)
            except RuntimeError:  # no event loop in this thread: now
                pending[metric] = amount
                self._add_pending()
                return
        pending[metric] = pending.get(metric, 0) + amount

    def _add_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for metric, amount in pending.items():
            if amount:
                metric.inc(amount)

    @contextmanager
    def timed(self, histogram: Histogram, *labels: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            histogram.labels(*labels).observe(time.perf_counter() - started)

    def exposition(self) -> bytes:
        """The text format, summed over every worker in multiprocess mode."""
        self._add_pending()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


CONTENT_TYPE = CONTENT_TYPE_LATEST
