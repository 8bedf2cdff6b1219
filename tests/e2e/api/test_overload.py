"""A storm of 100 concurrent requests against a queue of 8: only 200 or 429, and every 200's image is real."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import assert_error, decode

REQUESTS = 100


@pytest.fixture
def small_queue(model_cache: Path, tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(tiny_settings(model_cache, tmp_path, max_queue=8, max_batch=1))
    yield live
    live.stop()


async def _storm(url: str) -> tuple[list[httpx.Response], list[int]]:
    body = {"prompt": "storm", "width": 256, "height": 256, "num_inference_steps": 2}
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=180, limits=limits) as client:
        done = asyncio.Event()

        async def poll_health() -> list[int]:
            statuses: list[int] = []
            async with httpx.AsyncClient(base_url=url, timeout=10) as probe:
                while not done.is_set() and len(statuses) < 1000:
                    statuses.append((await probe.get("/health")).status_code)
                    await asyncio.sleep(0.1)
            return statuses

        health = asyncio.create_task(poll_health())
        try:
            responses = await asyncio.gather(
                *(client.post("/generate", json={**body, "seed": i}) for i in range(REQUESTS))
            )
        finally:
            done.set()
        return list(responses), await health


def test_storm_is_answered_with_200_or_429_only(small_queue: LiveServer) -> None:
    responses, health = asyncio.run(_storm(small_queue.url))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    assert 200 in statuses and 429 in statuses, statuses
    for r in responses:
        if r.status_code == 429:
            assert_error(r, 429, "queue_full")
            assert int(r.headers["retry-after"]) >= 1
    assert health and all(s == 200 for s in health), health
    with small_queue.client() as c:
        for r in responses:
            if r.status_code == 200:
                png = c.get(f"/download/{r.json()['id']}")
                assert png.status_code == 200
                assert decode(png.content).size == (256, 256)
