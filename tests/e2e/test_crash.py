"""kill -9 mid-stream: every image answered before the kill survives a restart, and no partial write remains."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tests.helpers import decode, serve_env, wait_ready

CLIENTS = 3


def _serve(model_cache: Path, tmp_path: Path, port: int) -> subprocess.Popen[Any]:
    return subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=serve_env(model_cache, tmp_path, SDXL_MODEL="tiny"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_sigkill_during_writes_loses_no_answered_image(model_cache: Path, tmp_path: Path) -> None:
    image_dir = tmp_path / "images"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(model_cache, tmp_path, port)
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def generate_forever(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            for i in range(10_000):
                if stop.is_set():
                    return
                try:
                    r = c.post("/generate", json={"prompt": "crash", "seed": worker * 10_000 + i, "width": 256})
                except httpx.TransportError:
                    return  # the server died under us
                if r.status_code == 200:
                    with lock:
                        answered.append(r.json()["id"])

    threads = [threading.Thread(target=generate_forever, args=(w,), daemon=True) for w in range(CLIENTS)]
    try:
        wait_ready(url, proc)
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while len(answered) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(answered) >= 6, "the server answered too few requests to test anything"
        proc.send_signal(signal.SIGKILL)  # with CLIENTS requests in flight, one of them mid-write
        proc.wait(30)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        for t in threads:
            t.join(60)
    with lock:
        before_kill = list(answered)
    # What a crash in the middle of os.replace's preparation leaves behind; the restart must sweep it.
    (image_dir / ".tmp-left-by-crash").write_bytes(b"\x89PNG partial")

    proc = _serve(model_cache, tmp_path, port := free_port())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        with httpx.Client(base_url=url, timeout=60) as c:
            for image_id in before_kill:
                r = c.get(f"/download/{image_id}")
                assert r.status_code == 200, (image_id, r.text)
                assert decode(r.content).format == "PNG"
        assert not list(image_dir.rglob(".tmp-*"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
