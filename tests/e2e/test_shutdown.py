"""Graceful stop: /ready turns 503 at once, new work is refused, the running job finishes, queued jobs are
answered, the process exits 0 and leaves no temporary files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import free_port, start_server, tiny_settings
from tests.helpers import ASYNC, SLOW, assert_error, serve_env, wait_for, wait_ready


def test_begin_shutdown_flips_ready_and_answers_queued_jobs(model_cache: Path, tmp_path: Path) -> None:
    live = start_server(tiny_settings(model_cache, tmp_path / "images", max_batch=1))
    try:
        with live.client() as c:
            running = c.post("/generate", json=SLOW, headers=ASYNC).json()["id"]
            queued = c.post("/generate", json={"prompt": "q"}, headers=ASYNC).json()["id"]
            wait_for(c, running, {"running"})
            live.service.request_shutdown()
            time.sleep(0.1)
            assert_error(c.get("/ready"), 503, "not_ready")
            assert_error(c.post("/generate", json={"prompt": "new"}), 503, "not_ready")
            job = c.get(f"/jobs/{queued}").json()
            assert job["status"] == "failed" and job["error"]["type"] == "shutting_down"
            assert wait_for(c, running, {"succeeded", "failed"})["status"] == "succeeded"
    finally:
        live.stop()


def test_sigterm_on_a_real_server(model_cache: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = serve_env(model_cache, tmp_path, SDXL_MODEL="tiny", SDXL_MAX_BATCH="1", SDXL_SHUTDOWN_GRACE_S="30")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(url, proc)
        results: dict[str, httpx.Response] = {}

        def post(name: str, body: dict[str, object]) -> None:
            results[name] = httpx.post(f"{url}/generate", json=body, timeout=60)

        running = threading.Thread(target=post, args=("running", SLOW))
        running.start()
        with httpx.Client(base_url=url, timeout=10) as c:
            deadline = time.monotonic() + 30
            while "sdxl_batch_size_count 1.0" not in c.get("/metrics").text:  # the slow job is on the GPU
                assert time.monotonic() < deadline
                time.sleep(0.05)
            queued = threading.Thread(target=post, args=("queued", {"prompt": "queued"}))
            queued.start()
            while c.get("/metrics").text.count("sdxl_queue_depth 1.0") == 0:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        running.join(60)
        queued.join(60)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = out.decode()
    assert proc.returncode == 0, log
    assert results["running"].status_code == 200, results["running"].text  # finished within the grace period
    assert_error(results["queued"], 503, "shutting_down")
    image_dir = tmp_path / "images"
    files = sorted(os.listdir(image_dir))
    assert files == [".records", f"{results['running'].json()['id']}.png"]  # no temporary files
    assert {p.suffix for p in (image_dir / ".records" / "jobs").iterdir()} == {".json"}  # job records only
    assert "shutting down: refusing new work" in log
