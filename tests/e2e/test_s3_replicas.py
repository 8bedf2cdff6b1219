"""Scale-out: two `python -m app serve` replicas on one S3 bucket answer for each other's images and jobs, and a
live replica's lease is honoured: its unfinished jobs read alive elsewhere for as long as it runs them.
Also: a store that cannot open at startup ends `serve` with one clear line, like a model that cannot load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.helpers import assert_error, wait_ready
from tests.s3_server import S3Server

ASYNC = {"Prefer": "respond-async"}
TERMINAL = {"succeeded", "failed", "cancelled"}
LEASE_S = 2  # short, so that a test can outlast it; the default is 30
SLOW = {"prompt": "slow", "width": 512, "height": 512, "num_inference_steps": 100, "num_images": 4}  # minutes here


def _env(model_cache: Path, s3_server: S3Server, image_dir: Path, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDXL_", "AWS_")) and k != "GENERATION_AUTH_KEY"}
    env.update(SDXL_MODEL="tiny", SDXL_CACHE_DIR=str(model_cache), IMAGE_DIR=str(image_dir), HF_HUB_OFFLINE="1")
    env.update(s3_server.env(prefix))
    return env


def _serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def _job(url: str, job_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{url}/jobs/{job_id}")
        if r.status_code == 200 and r.json()["status"] in statuses:
            job: dict[str, Any] = r.json()
            return job
        assert time.monotonic() < deadline, f"job {job_id} at {url}: {r.status_code} {r.text}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def replicas(
    model_cache: Path, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, Path]]:
    prefix, tmp_path = f"replicas-{uuid.uuid4().hex[:8]}/", tmp_path_factory.mktemp("replicas")
    b_dir, lease = tmp_path / "b-images", {"SDXL_REPLICA_LEASE_S": str(LEASE_S)}
    a, a_url = _serve({**_env(model_cache, s3_server, tmp_path / "a-images", prefix), **lease})
    b, b_url = _serve({**_env(model_cache, s3_server, b_dir, prefix), **lease})  # both load at once
    try:
        wait_ready(a_url, a, timeout=120)
        wait_ready(b_url, b, timeout=120)
        yield a_url, b_url, b_dir
    finally:
        for proc in (a, b):
            proc.send_signal(signal.SIGTERM)
        for proc in (a, b):
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, out
            assert "Traceback" not in out, out


def test_replica_b_serves_what_replica_a_made(replicas: tuple[str, str, Path]) -> None:
    a, b, b_dir = replicas
    sync = httpx.post(f"{a}/generate", json={"prompt": "a lighthouse", "seed": 11}, timeout=60)
    assert sync.status_code == 200, sync.text
    accepted = httpx.post(f"{a}/generate", json={"prompt": "a harbour", "num_images": 2}, headers=ASYNC)
    assert accepted.status_code == 202, accepted.text
    done = _job(a, accepted.json()["id"], TERMINAL)
    assert done["status"] == "succeeded"

    # B never ran these jobs: it reads their records from the bucket.
    made_on_a = {sync.json()["job_id"]: [sync.json()["id"]], done["id"]: [i["id"] for i in done["images"]]}
    for job_id, image_ids in made_on_a.items():
        job = _job(b, job_id, TERMINAL, timeout=10)
        assert job["status"] == "succeeded" and [i["id"] for i in job["images"]] == image_ids

    image_id = sync.json()["id"]
    png = httpx.get(f"{b}/download/{image_id}")
    assert png.status_code == 200 and png.content == httpx.get(f"{a}/download/{image_id}").content
    refined = httpx.post(f"{b}/refine", json={"id": image_id, "prompt": "sharp", "strength": 0.5}, timeout=60)
    assert refined.status_code == 200, refined.text
    assert refined.json()["parent_id"] == image_id
    assert httpx.get(f"{a}/download/{refined.json()['id']}").status_code == 200
    assert list(b_dir.glob("*.png")) == []  # B's own IMAGE_DIR was never used
    assert_error(httpx.get(f"{b}/jobs/{uuid.uuid4().hex}"), 404, "not_found")


def test_another_replicas_running_job_is_followed_not_cancelled(replicas: tuple[str, str, Path]) -> None:
    a, b, _ = replicas
    job_id = httpx.post(f"{a}/generate", json=SLOW, headers=ASYNC).json()["id"]
    _job(b, job_id, {"queued"}, timeout=10)  # B sees the record written when A accepted it
    error = assert_error(httpx.delete(f"{b}/jobs/{job_id}"), 409, "other_replica")
    assert "another replica" in error["message"]

    events: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{b}/jobs/{job_id}/events", timeout=60) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(json.loads(line.removeprefix("data: ")))
            if len(events) == 1:
                assert httpx.delete(f"{a}/jobs/{job_id}").status_code == 200  # only A can cancel it
    assert [e["status"] for e in events] == ["queued", "cancelled"]  # B polls the record until it ends
    assert httpx.delete(f"{b}/jobs/{job_id}").json()["status"] == "cancelled"  # ended: nothing to refuse


def test_a_live_replicas_job_reads_alive_elsewhere_for_longer_than_its_lease(replicas: tuple[str, str, Path]) -> None:
    a, b, _ = replicas
    job_id = httpx.post(f"{a}/generate", json=SLOW, headers=ASYNC).json()["id"]
    on_a = _job(a, job_id, {"running"})
    assert on_a["replica"]["alive"] is True
    # Past the point where a lease that was not renewed would have lapsed (its term and the clock-skew margin).
    deadline = time.monotonic() + LEASE_S + 2 + 1
    while time.monotonic() < deadline:
        on_b = _job(b, job_id, {"queued", "running", *TERMINAL}, timeout=5)
        assert on_b["status"] == "queued" and on_b["error"] is None, on_b  # the record, not "failed"
        assert on_b["replica"] == on_a["replica"], on_b  # the same replica, instance, and alive
        time.sleep(0.2)
    assert httpx.delete(f"{a}/jobs/{job_id}").status_code == 200
    ended = _job(b, job_id, TERMINAL, timeout=30)
    assert ended["status"] == "cancelled" and ended["replica"]["alive"] is None  # ended: its lease is not asked


def test_store_that_cannot_open_fails_startup_with_one_line(
    model_cache: Path, s3_server: S3Server, tmp_path: Path
) -> None:
    env = _env(model_cache, s3_server, tmp_path / "images", "x/")
    env["SDXL_S3_BUCKET"] = "no-such-bucket"
    proc = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, proc.stderr
    assert "no-such-bucket" in errors[0] and "does not exist" in errors[0]
    assert "Traceback" not in proc.stderr and s3_server.secret_key not in proc.stderr
