"""Prometheus metrics, one registry per app (so tests can run several apps in one process).

Names follow Prometheus conventions: base units (seconds), `_total` for counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sdxl_http_requests_total",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "sdxl_http_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "sdxl_queue_wait_seconds",
            "Time a job waited before its first image started",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "sdxl_inference_seconds",
            "Duration of one pipeline call (one batch)",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("sdxl_queue_depth", "Images waiting for the GPU", registry=r)
        self.batch_size = Histogram(
            "sdxl_batch_size", "Images per pipeline call", buckets=(1, 2, 3, 4, 6, 8, 12, 16), registry=r
        )
        self.images = Counter("sdxl_images_generated_total", "Images stored", ["kind"], registry=r)
        self.failures = Counter("sdxl_job_failures_total", "Failed or cancelled jobs by type", ["type"], registry=r)
        self.model_load = Histogram(
            "sdxl_model_load_seconds",
            "Pipeline load time",
            ["role"],
            buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 120, 300),
            registry=r,
        )

        self.compile = Histogram(
            "sdxl_compile_seconds",
            "torch.compile (SDXL_TORCH_COMPILE): inductor's seconds per graph built (the tracing before it is not "
            "counted); a count that grows after startup means requests waited for compiles",
            ["part"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600),
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
