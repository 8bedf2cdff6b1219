"""Scheduling: bounded queue (429), queue deadline (503, never run), dynamic batching, num_images."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import ASYNC, SLOW, assert_error, pixels, wait_for


@pytest.fixture
def small_queue(model_cache: Path, tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(
        tiny_settings(model_cache, tmp_path / "images", max_batch=1, max_queue=2, queue_timeout_s=600)
    )
    yield server
    server.stop()


def test_full_queue_answers_429_at_once(small_queue: LiveServer) -> None:
    with small_queue.client() as c:
        running = c.post("/generate", json=SLOW, headers=ASYNC).json()["id"]
        wait_for(c, running, {"running"})
        queued = [c.post("/generate", json={"prompt": f"q{i}"}, headers=ASYNC) for i in range(2)]
        assert [r.status_code for r in queued] == [202, 202]
        started = time.perf_counter()
        r = c.post("/generate", json={"prompt": "one too many"})
        assert time.perf_counter() - started < 0.5
        assert_error(r, 429, "queue_full")
        assert int(r.headers["retry-after"]) >= 1
        too_many = c.post("/generate", json={"prompt": "x", "num_images": 3}, headers=ASYNC)
        assert_error(too_many, 429, "queue_full")  # 3 images never fit a queue of 2
        for r in queued:  # nothing accepted is lost
            assert wait_for(c, r.json()["id"], {"succeeded", "failed"})["status"] == "succeeded"


def test_job_past_its_deadline_is_answered_503_and_never_run(model_cache: Path, tmp_path: Path) -> None:
    live = start_server(tiny_settings(model_cache, tmp_path / "images", max_batch=1, queue_timeout_s=0.5))
    try:
        with live.client() as c:
            running = c.post("/generate", json=SLOW, headers=ASYNC).json()["id"]
            wait_for(c, running, {"running"})
            started = time.perf_counter()
            r = c.post("/generate", json={"prompt": "late"})
            waited = time.perf_counter() - started
            assert_error(r, 503, "queue_timeout")
            assert 0.5 <= waited < 2.0
            late = next(j for j in live.service.jobs.kept() if j.id != running)
            assert late.started is None and late.steps_done == 0 and late.images == []
            assert wait_for(c, running, {"succeeded"})["status"] == "succeeded"
            assert len(list(Path(live.settings.image_dir).glob("*.png"))) == 1  # only the slow job's image
    finally:
        live.stop()


@pytest.fixture
def batching(model_cache: Path, tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(tiny_settings(model_cache, tmp_path / "images", batch_window_ms=300, max_batch=8))
    yield server
    server.stop()


async def _concurrently(url: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        responses = await asyncio.gather(*(c.post("/generate", json=b) for b in bodies))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    return [r.json() for r in responses]


def _batch_sizes(live: LiveServer) -> list[float]:
    text = httpx.get(f"{live.url}/metrics").text
    count = next(line for line in text.splitlines() if line.startswith("sdxl_batch_size_count"))
    total = next(line for line in text.splitlines() if line.startswith("sdxl_batch_size_sum"))
    return [float(count.split()[-1]), float(total.split()[-1])]


def test_batched_images_match_the_same_requests_alone(batching: LiveServer) -> None:
    bodies = [{"prompt": f"prompt {i}", "seed": 100 + i, "negative_prompt": f"neg {i}"} for i in range(4)]
    calls_before, images_before = _batch_sizes(batching)
    together = asyncio.run(_concurrently(batching.url, bodies))
    calls, images = (a - b for a, b in zip(_batch_sizes(batching), [calls_before, images_before], strict=True))
    assert images == 4 and calls < 4, "the four requests should have shared pipeline calls"

    with batching.client() as c:
        for body, batched in zip(bodies, together, strict=True):
            alone = c.post("/generate", json=body).json()
            a = pixels(c.get(f"/download/{alone['id']}").content)
            b = pixels(c.get(f"/download/{batched['id']}").content)
            assert np.abs(a - b).mean() < 1.0, "an image must not depend on what it was batched with"


def test_incompatible_requests_never_share_a_call(batching: LiveServer) -> None:
    calls_before, _ = _batch_sizes(batching)
    bodies = [
        {"prompt": "a", "width": 256, "height": 256, "seed": 1},
        {"prompt": "b", "width": 320, "height": 256, "seed": 1},
        {"prompt": "c", "num_inference_steps": 3, "seed": 1},
        {"prompt": "d", "guidance_scale": 1.0, "seed": 1},
    ]
    results = asyncio.run(_concurrently(batching.url, bodies))
    calls, _ = _batch_sizes(batching)
    assert calls - calls_before == 4
    assert [(r["width"], r["height"]) for r in results] == [(256, 256), (320, 256), (256, 256), (256, 256)]


def test_num_images_gives_distinct_seeds_that_reproduce(client: httpx.Client) -> None:
    r = client.post("/generate", json={"prompt": "grid", "seed": 10, "num_images": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["seed"] for i in body["images"]] == [10, 11, 12]
    assert body["id"] == body["images"][0]["id"] and len({i["id"] for i in body["images"]}) == 3
    third = pixels(client.get(f"/download/{body['images'][2]['id']}").content)
    alone = client.post("/generate", json={"prompt": "grid", "seed": 12}).json()
    assert np.abs(third - pixels(client.get(f"/download/{alone['id']}").content)).mean() < 1.0
    error = assert_error(
        client.post("/generate", json={"prompt": "x", "num_images": 2}, headers={"Accept": "image/png"}),
        422,
        "invalid_request",
        "num_images",
    )
    assert "num_images=1" in error["message"]
    assert_error(client.post("/generate", json={"prompt": "x", "num_images": 9}), 422, "invalid_request", "num_images")


def test_jobs_take_turns_one_call_each(model_cache: Path, tmp_path: Path) -> None:
    """A 2-image job and a 1-image job queued behind a running one: the later job's image runs between the two
    images of the earlier one (round-robin per call), not after all of them."""
    live = start_server(tiny_settings(model_cache, tmp_path / "images", max_batch=1, queue_timeout_s=600))
    try:
        with live.client() as c:
            running = c.post("/generate", json=SLOW, headers=ASYNC).json()["id"]
            wait_for(c, running, {"running"})
            big = c.post("/generate", json={"prompt": "big", "num_images": 2, "num_inference_steps": 4}, headers=ASYNC)
            small = c.post("/generate", json={"prompt": "small", "num_inference_steps": 4}, headers=ASYNC)
            assert big.status_code == small.status_code == 202, (big.text, small.text)
            small_done = wait_for(c, small.json()["id"], {"succeeded", "failed"})
            big_done = wait_for(c, big.json()["id"], {"succeeded", "failed"})
            assert small_done["status"] == big_done["status"] == "succeeded"
            # First in, first out would finish the big job before the small one started.
            assert big_done["started"] < small_done["started"] < small_done["finished"] < big_done["finished"]
    finally:
        live.stop()
