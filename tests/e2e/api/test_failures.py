"""Failure handling by fault injection: out-of-memory fails one job only and never flips /ready; repeated other
failures flip /ready until a call succeeds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from app.engine.gpu import pipelines
from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import assert_error


@pytest.fixture
def live(model_cache: Path, tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(tiny_settings(model_cache, tmp_path / "images", max_consecutive_failures=3))
    yield server
    server.stop()


def test_out_of_memory_fails_that_job_only(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pipelines.run_generate
    failures = {"left": 0}

    def oom_sometimes(*args: Any, **kwargs: Any) -> Any:
        if failures["left"] > 0:  # fault injection: the device runs out of memory mid-call
            failures["left"] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipelines, "run_generate", oom_sometimes)
    with live.client() as c:
        failures["left"] = 1
        error = assert_error(c.post("/generate", json={"prompt": "big"}), 503, "out_of_memory")
        assert "20.00 GiB" not in error["message"]  # no device internals in the body
        assert c.post("/generate", json={"prompt": "next"}).status_code == 200
        assert c.get("/ready").status_code == 200

        # An out-of-memory error is recovered from (dtypes restored, memory freed): however many come in a row,
        # /ready stays 200, or a load balancer would take the replica out for good (no traffic, so no success).
        failures["left"] = 3
        for _ in range(3):
            assert_error(c.post("/generate", json={"prompt": "big"}), 503, "out_of_memory")
        assert c.get("/ready").status_code == 200
        assert c.post("/generate", json={"prompt": "recovers"}).status_code == 200
        metrics = c.get("/metrics").text
    assert 'sdxl_job_failures_total{type="out_of_memory"} 4.0' in metrics


def test_repeated_pipeline_errors_flip_ready_until_a_call_succeeds(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pipelines.run_generate
    failures = {"left": 3}

    def broken_sometimes(*args: Any, **kwargs: Any) -> Any:
        if failures["left"] > 0:  # fault injection: a pipeline that fails whatever is asked
            failures["left"] -= 1
            raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipelines, "run_generate", broken_sometimes)
    with live.client() as c:
        for _ in range(3):
            assert_error(c.post("/generate", json={"prompt": "x"}), 500, "generation_failed")
        ready = c.get("/ready")
        assert_error(ready, 503, "not_ready")
        assert "3 pipeline calls failed in a row" in ready.json()["error"]["message"]
        assert c.post("/generate", json={"prompt": "recovers"}).status_code == 200  # still accepts work
        assert c.get("/ready").status_code == 200


def test_unexpected_pipeline_error_is_a_clean_500(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("/secret/path/model.safetensors is corrupt")

    monkeypatch.setattr(pipelines, "run_generate", broken)
    with live.client() as c:
        r = c.post("/generate", json={"prompt": "x"})
    error = assert_error(r, 500, "generation_failed")
    assert "/secret" not in r.text and "RuntimeError" in error["message"]


def test_metrics_follow_prometheus_naming(live: LiveServer) -> None:
    with live.client() as c:
        assert c.post("/generate", json={"prompt": "x"}).status_code == 200
        c.get("/health")
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in [
        "sdxl_http_requests_total",
        "sdxl_http_request_duration_seconds_bucket",
        "sdxl_queue_wait_seconds_bucket",
        "sdxl_queue_depth",
        "sdxl_batch_size_bucket",
        "sdxl_images_generated_total",
        "sdxl_job_failures_total",
        "sdxl_model_load_seconds_bucket",
        "sdxl_inference_seconds_bucket",
    ]:
        assert name in text, name
    assert 'sdxl_http_requests_total{method="POST",route="/generate",status="200"} 1.0' in text
    assert 'sdxl_images_generated_total{kind="generate"} 1.0' in text
    assert 'sdxl_model_load_seconds_count{role="model"} 1.0' in text
