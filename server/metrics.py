"""Prometheus metrics of one app, in a registry of its own (two apps in one process never share counters)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Milliseconds to seconds: a thumbnail lookup is ~0.1 ms, a CPU forward of 32 images a second or two.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The counters and histograms the server keeps, and their text exposition for `GET /metrics`."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.stage_seconds = Histogram(
            "simsearch_stage_seconds",
            "Time a request spent in each stage (decode, transform, queue, forward, search, store).",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "simsearch_request_seconds",
            "Whole request latency by route.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "simsearch_requests",
            "Requests answered, by route and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.batch_images = Histogram(
            "simsearch_forward_batch_images",
            "Images per shared forward pass (dynamic batching).",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.forward_seconds = Histogram(
            "simsearch_forward_batch_seconds",
            "Duration of one shared forward pass.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.images = Gauge("simsearch_collection_images", "Images in the collection.", registry=self.registry)
        self.ready = Gauge("simsearch_ready", "1 once the model is loaded and warmed.", registry=self.registry)

    def track_images(self, count: Callable[[], int]) -> None:
        self.images.set_function(lambda: float(count()))

    def observe_stages(self, seconds: dict[str, float]) -> None:
        for stage, value in seconds.items():
            self.stage_seconds.labels(stage).observe(value)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
