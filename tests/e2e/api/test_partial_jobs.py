"""Jobs of several pipeline calls (num_images above max_batch) that end part-way, by fault injection: what was
stored is named and kept, what was still queued never runs, an image that lands after the end is in the record,
and a lost final record write is retried."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from app.engine.gpu import pipelines
from app.storage import local
from app.storage.local import LocalImageStore
from tests.conftest import start_server, tiny_settings
from tests.helpers import ASYNC, assert_error, wait_for


def _record(images: Path, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((images / ".records" / "jobs" / f"{job_id}.json").read_text())
    return data


def _until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_later_call_failing_names_the_stored_images_and_runs_no_more(
    model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = tmp_path / "images"
    live = start_server(tiny_settings(model_cache, images, max_batch=1))
    real = pipelines.run_generate
    calls = 0

    def second_call_fails(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # fault injection: the device fails in the job's second call
            raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipelines, "run_generate", second_call_fails)
    try:
        with live.client() as c:
            r = c.post("/generate", json={"prompt": "x", "num_images": 3, "num_inference_steps": 2})
            message = assert_error(r, 500, "generation_failed")["message"]
            stored = re.findall(r"1 of 3 images had been stored: ([0-9a-f]{32})", message)
            assert len(stored) == 1, message
            assert c.get(f"/download/{stored[0]}").status_code == 200
            time.sleep(0.5)
            assert calls == 2  # the third image, still queued when the job failed, never ran
            assert c.post("/generate", json={"prompt": "next", "num_inference_steps": 2}).status_code == 200
    finally:
        live.stop()


def test_an_image_stored_after_a_cancel_is_in_the_jobs_record(
    model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first image is still being stored (a slow store) when the cancel stops the second call: the job ends
    cancelled at once, and its record, already written, is written again once that image lands."""
    images = tmp_path / "images"
    live = start_server(tiny_settings(model_cache, images, max_batch=1))
    real_put = LocalImageStore.put

    async def slow_put(self: LocalImageStore, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(2)  # fault injection: a slow disk
        return await real_put(self, *args, **kwargs)

    monkeypatch.setattr(LocalImageStore, "put", slow_put)
    try:
        with live.client() as c:
            body = {"prompt": "x", "num_images": 2, "num_inference_steps": 30}
            job_id = c.post("/generate", json=body, headers=ASYNC).json()["id"]
            _until(lambda: c.get(f"/jobs/{job_id}").json()["progress"]["step"] > 31)  # in the second call
            c.delete(f"/jobs/{job_id}")
            assert wait_for(c, job_id, {"succeeded", "failed", "cancelled"})["status"] == "cancelled"
            _until(lambda: len(_record(images, job_id)["images"]) == 1)
            record, view = _record(images, job_id), c.get(f"/jobs/{job_id}").json()
            assert record["status"] == view["status"] == "cancelled"
            assert [i["id"] for i in record["images"]] == [i["id"] for i in view["images"]]
            assert c.get(f"/download/{record['images'][0]['id']}").status_code == 200
    finally:
        live.stop()


def test_a_lost_final_record_write_is_retried(
    model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the job is forgotten here (job_ttl_s), the record answers for it: it must not stay "queued"."""
    images = tmp_path / "images"
    live = start_server(tiny_settings(model_cache, images, job_ttl_s=0.5))
    real_put_record = LocalImageStore.put_record
    refused = 0

    async def first_final_write_fails(self: LocalImageStore, name: str, data: bytes) -> None:
        nonlocal refused
        if name.startswith("jobs/") and b'"succeeded"' in data and not refused:
            refused += 1  # fault injection: the store's own error for a full disk, once
            raise local._storage_error(OSError(28, "No space left on device"))
        await real_put_record(self, name, data)

    monkeypatch.setattr(LocalImageStore, "put_record", first_final_write_fails)
    try:
        with live.client() as c:
            job_id = c.post("/generate", json={"prompt": "x", "num_inference_steps": 2}, headers=ASYNC).json()["id"]
            _until(lambda: refused == 1)
            _until(lambda: _record(images, job_id)["status"] == "succeeded", timeout=10)
            time.sleep(0.6)  # forgotten here: what answers now is the record
            assert c.get(f"/jobs/{job_id}").json()["status"] == "succeeded"
    finally:
        live.stop()
