"""Async jobs: 202 + job resource, polling, Server-Sent Events, cancelling queued and running jobs."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import ASYNC, SLOW, assert_error, wait_for


@pytest.fixture
def live(model_cache: Path, tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(tiny_settings(model_cache, tmp_path / "images", max_batch=1))
    yield server
    server.stop()


def test_respond_async_then_poll_to_success(client: httpx.Client) -> None:
    r = client.post("/generate", json={"prompt": "x", "seed": 4, "num_images": 2}, headers=ASYNC)
    assert r.status_code == 202, r.text
    assert r.headers["preference-applied"] == "respond-async"
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] in ("queued", "running") and job["kind"] == "generate"
    done = wait_for(client, job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"step": 8, "total": 8}  # 2 images x 4 steps
    assert [i["seed"] for i in done["images"]] == [4, 5]
    assert done["queue_position"] is None and done["error"] is None
    assert done["started"] >= done["created"] and done["finished"] >= done["started"]
    for image in done["images"]:
        assert client.get(f"/download/{image['id']}").status_code == 200


def test_refine_can_run_async(client: httpx.Client) -> None:
    image_id = client.post("/generate", json={"prompt": "x", "seed": 1}).json()["id"]
    r = client.post("/refine", json={"id": image_id, "prompt": "y"}, headers=ASYNC)
    assert r.status_code == 202
    done = wait_for(client, r.json()["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded" and done["parent_id"] == image_id and done["kind"] == "refine"
    assert done["progress"]["step"] == done["progress"]["total"] == 3  # int(10 * 0.3)


def test_a_second_order_scheduler_counts_steps_not_evaluations(client: httpx.Client) -> None:
    """Heun calls diffusers' step callback 2N - 1 times for N steps: progress still ends at exactly N per image."""
    body = {"prompt": "x", "num_inference_steps": 4, "num_images": 2, "scheduler": "heun"}
    job_id = client.post("/generate", json=body, headers=ASYNC).json()["id"]
    with client.stream("GET", f"/jobs/{job_id}/events") as stream:
        events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
    steps = [e["progress"]["step"] for e in events]
    assert all(e["progress"]["total"] == 8 for e in events) and steps == sorted(steps) and steps[-1] == 8, events
    image_id = events[-1]["images"][0]["id"]
    edit = {"prompt": "y", "image_id": image_id, "strength": 0.5, "num_inference_steps": 6, "scheduler": "heun"}
    done = wait_for(client, client.post("/img2img", json=edit, headers=ASYNC).json()["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded" and done["progress"] == {"step": 3, "total": 3}, done  # int(6 * 0.5)


def test_events_stream_until_the_job_ends(client: httpx.Client) -> None:
    job_id = client.post("/generate", json={"prompt": "x", "num_inference_steps": 6}, headers=ASYNC).json()["id"]
    events = []
    with client.stream("GET", f"/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["status"] == "succeeded"
    steps = [e["progress"]["step"] for e in events]
    assert steps == sorted(steps) and steps[-1] == 6
    assert any(e["status"] == "running" for e in events)


def test_job_ids_are_validated(client: httpx.Client) -> None:
    assert_error(client.get("/jobs/" + "0" * 32), 404, "not_found")
    assert_error(client.get("/jobs/..%2F..%2Fetc"), 404, "not_found")  # a slash never reaches the route
    for bad in ["x" * 32, "0" * 31, "0" * 32 + "%0a"]:
        assert_error(client.get(f"/jobs/{bad}"), 422, "invalid_id")
        assert_error(client.delete(f"/jobs/{bad}"), 422, "invalid_id")
    assert_error(client.get("/jobs/" + "0" * 32 + "/events"), 404, "not_found")


def test_cancel_queued_and_running_jobs(live: LiveServer) -> None:
    with live.client() as c:
        running = c.post("/generate", json=SLOW, headers=ASYNC).json()["id"]
        queued = c.post("/generate", json={"prompt": "q"}, headers=ASYNC).json()["id"]
        job = wait_for(c, running, {"running"})
        assert c.get(f"/jobs/{queued}").json()["queue_position"] == 0

        cancelled = c.delete(f"/jobs/{queued}").json()
        assert cancelled["status"] == "cancelled" and cancelled["error"]["type"] == "cancelled"

        while job["progress"]["step"] == 0:
            job = c.get(f"/jobs/{running}").json()
        c.delete(f"/jobs/{running}")
        started = time.monotonic()
        job = wait_for(c, running, {"cancelled", "succeeded", "failed"}, timeout=10)
        assert job["status"] == "cancelled", job
        assert job["progress"]["step"] < job["progress"]["total"]  # interrupted, not run to the end
        assert time.monotonic() - started < 3
        assert job["images"] == []
    assert list(Path(live.settings.image_dir).glob("*.png")) == []  # neither job stored an image


def test_disconnected_sync_client_cancels_its_queued_job(live: LiveServer) -> None:
    with live.client() as c:
        blocker = c.post("/generate", json=SLOW, headers=ASYNC).json()["id"]
        wait_for(c, blocker, {"running"})
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{live.url}/generate", json={"prompt": "gone"}, timeout=0.5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            states = {j.status.value for j in live.service.jobs.kept() if j.id != blocker}
            if states == {"cancelled"}:
                break
            time.sleep(0.05)
        assert states == {"cancelled"}
        assert wait_for(c, blocker, {"succeeded"})["status"] == "succeeded"


def test_sync_request_for_a_job_cancelled_elsewhere_gets_409(live: LiveServer) -> None:
    with live.client() as c:
        blocker = c.post("/generate", json=SLOW, headers=ASYNC).json()["id"]
        wait_for(c, blocker, {"running"})
        result: dict[str, httpx.Response] = {}
        waiter = threading.Thread(target=lambda: result.update(r=c.post("/generate", json={"prompt": "victim"})))
        waiter.start()
        time.sleep(0.5)
        victim = next(j for j in live.service.jobs.kept() if j.id != blocker)
        c.delete(f"/jobs/{victim.id}")
        waiter.join(30)
    assert_error(result["r"], 409, "cancelled")


def test_disconnected_sync_client_cancels_its_running_job(live: LiveServer) -> None:
    """Its images would be stored as orphans nobody has the ids of (issue 13, item 7): it stops at the next step."""
    stored_before = len(list((live.settings.image_dir).glob("**/*.png")))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{live.url}/generate", json=SLOW, timeout=1.0)
    deadline = time.monotonic() + 10
    job = None
    while time.monotonic() < deadline:
        job = next(iter(live.service.jobs.kept()), None)
        if job is not None and job.status.terminal:
            break
        time.sleep(0.05)
    assert job is not None and job.status.value == "cancelled", job
    assert job.started is not None  # it was running, not queued, when the client went
    assert job.steps_done < job.total_steps  # stopped part-way
    assert len(list(live.settings.image_dir.glob("**/*.png"))) == stored_before  # no orphan image


@pytest.mark.parametrize("stored_when_gone", [1, 2])
def test_a_sync_client_gone_after_some_images_leaves_none_behind(live: LiveServer, stored_when_gone: int) -> None:
    """The images a synchronous job stored before its caller hung up (earlier batches, or the last one landing as
    it went) are removed: nobody was given their ids (issue 13, item 7; bench.races found 2 such orphans)."""
    body = json.dumps({"prompt": "three", "num_images": 3, "num_inference_steps": 16}).encode()
    host, port = live.url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    head = f"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    s.sendall(head.encode() + b"\r\n" + body)
    deadline = time.monotonic() + 60
    while not (jobs := live.service.jobs.kept()) or len(jobs[0].images) < stored_when_gone:  # max_batch 1
        assert time.monotonic() < deadline
        time.sleep(0.01)
    job = jobs[0]
    s.close()  # the client goes away with images stored
    while not job.status.terminal or live.service.completion._storing.get(job):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # a store that was in flight lands, and is removed
    assert job.unclaimed and job.images == []
    assert list(live.settings.image_dir.glob("**/*.png")) == []  # no orphan
