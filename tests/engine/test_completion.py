"""classify: the one place that decides what a failed pipeline call or store means for its jobs; and the queue
time Completion.started records."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from app.config import Settings
from app.engine.completion import Completion, classify
from app.engine.gpu.scheduler import Batch, Interrupted, Item, QueueFull
from app.engine.jobs.job import Job, JobFailure, JobStatus
from app.engine.metrics import Metrics
from app.errors import ModelLoadError, StorageFull


def test_a_cancel_inside_the_call_is_a_cancel() -> None:
    status, error = classify(Interrupted())
    assert (status, error.type) == (JobStatus.CANCELLED, "cancelled")


def test_out_of_memory_by_type_and_by_message() -> None:
    for exc in (torch.OutOfMemoryError("CUDA out of memory"), RuntimeError("MPS backend out of memory")):
        status, error = classify(exc)
        assert (status, error.type) == (JobStatus.FAILED, "out_of_memory")
        assert "CUDA" not in error.message  # the client learns what to do, not the allocator's report


def test_domain_errors_keep_their_type_and_message_but_not_their_wait() -> None:
    status, error = classify(ModelLoadError("could not load 'x'", retry_after=60))
    assert (status, error.type, error.message) == (JobStatus.FAILED, "model_load_failed", "could not load 'x'")
    assert error.retry_after is None  # a failed job is retried as a whole, after the API's default
    assert classify(StorageFull("disk full"))[1].type == "storage_full"
    assert classify(QueueFull("full"))[1].type == "queue_full"


def test_anything_else_names_only_its_class() -> None:
    status, error = classify(ValueError("secret path /srv/models/x"))
    assert (status, error.type) == (JobStatus.FAILED, "generation_failed")
    assert "/srv" not in error.message and "ValueError" in error.message


def test_out_of_memory_as_a_cause_and_a_load_that_ran_out_keeps_its_hint() -> None:
    wrapped = RuntimeError("the VAE failed")
    wrapped.__cause__ = torch.OutOfMemoryError("CUDA out of memory")
    assert classify(wrapped)[1].type == "out_of_memory"
    load = ModelLoadError("could not load the refiner (OutOfMemoryError); the device has no room for it")
    assert classify(load)[1] == JobFailure("model_load_failed", load.message)


def test_queue_time_is_read_at_the_owners_take() -> None:
    """Completion.started runs on the event loop, which can hear of a start late: queue_ms and the queue-wait
    histogram come from the batch's `taken` time, not from when the loop runs."""
    unused: Any = None
    metrics = Metrics()
    completion = Completion(
        Settings(model="tiny"),
        unused,
        unused,
        unused,
        metrics,
        finish=unused,
        save=unused,
        spawn=unused,
        queue_depth=lambda: 0,
        free_memory=unused,
        download_path=unused,
    )
    job = Job(kind="generate", model="tiny", items=[object()], batch_key=None, pixels=1, steps=1)
    submitted = time.monotonic() - job.waited
    batch = Batch([Item(job, 0)], taken=submitted + 0.05)  # the owner took it 50 ms after its submission
    time.sleep(0.2)  # the loop hears of it later
    completion.started(batch)
    assert 45 <= job.timings["queue_ms"] <= 55
    assert metrics.registry.get_sample_value("sdxl_queue_wait_seconds_sum") == pytest.approx(0.05, abs=0.005)
