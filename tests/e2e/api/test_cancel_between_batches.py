"""A job cancelled between two of its batches ends at once (issue 13, item 6).

It used to stay "running" for ever: its queued images were removed, but the cancel waited for a running batch of
its own to end it, and there was none. The gap between two batches is held open deterministically with an owner
call (scheduler.call runs ahead of queued images), and the pipeline call is held with an event (fault injection).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.engine.gpu import pipelines
from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import wait_for


@pytest.fixture
def live(model_cache: Path, tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(tiny_settings(model_cache, tmp_path / "images", max_batch=1))
    yield server
    server.stop()


def test_a_job_cancelled_between_its_batches_ends_at_once(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pipelines.run_generate
    first_call_may_end = threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        first_call_may_end.wait(30)  # fault injection: a slow first batch
        return real(*args, **kwargs)

    monkeypatch.setattr(pipelines, "run_generate", held)
    gap_may_end = threading.Event()
    service = live.service
    assert service._loop is not None
    with live.client() as c:
        r = c.post(
            "/generate",
            json={"prompt": "x", "num_images": 2, "num_inference_steps": 2},
            headers={"Prefer": "respond-async"},
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        wait_for(c, job_id, {"running"})
        # Ahead of the job's second image, the owner will run this: the gap between its two batches.
        gap = asyncio.run_coroutine_threadsafe(service.scheduler.call(gap_may_end.wait, 30), service._loop)
        first_call_may_end.set()
        try:
            # The first image stored, the second queued, nothing of the job running: cancel it now.
            view: dict[str, Any] = {}
            for _ in range(400):
                view = c.get(f"/jobs/{job_id}").json()
                if len(view["images"]) == 1 and view["queue_position"] == 0:
                    break
                time.sleep(0.05)
            assert len(view["images"]) == 1 and view["queue_position"] == 0 and view["status"] == "running", view
            cancelled = c.delete(f"/jobs/{job_id}").json()
            assert cancelled["status"] == "cancelled", cancelled  # at once, not after the gap
        finally:
            gap_may_end.set()
            gap.result(30)
        final = c.get(f"/jobs/{job_id}").json()
        assert final["status"] == "cancelled"
        with c.stream("GET", f"/jobs/{job_id}/events") as stream:  # the stream of an ended job ends
            assert any("cancelled" in line for line in stream.iter_lines())
