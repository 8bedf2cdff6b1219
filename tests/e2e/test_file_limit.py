"""The real CLI under a low open-file limit, facing more slow connections than it has descriptors: plain uvicorn
accepts until accept fails with "Too many open files", logs that in a loop and stops answering /health; here the cap
is kept below the limit, the oldest slow connections make room, and the log stays short."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import httpx

from tests.conftest import free_port
from tests.helpers import serve_env, wait_ready

NOFILE = 256  # the server's limit: 128 kept, 32 for the backlog, a cap of 96
SLOW = 400


def _low_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def test_slow_connections_past_the_file_limit(model_cache: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        _attack(port, url, log, model_cache, tmp_path)
    text = log_path.read_bytes()
    assert b"Too many open files" not in text
    assert b"serving at most 96 connections, not SDXL_MAX_CONNECTIONS=1000" in text
    assert len(text) < 20_000, len(text)  # one line for the closed connections, not one per connection


def _attack(port: int, url: str, log: BinaryIO, model_cache: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=serve_env(model_cache, tmp_path, SDXL_MODEL="tiny"),
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_low_file_limit,
    )
    slow: list[socket.socket] = []
    try:
        wait_ready(url, proc)
        for _ in range(SLOW):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # half a head, held open (the head timeout is 60 s)
            slow.append(s)
        health = []
        for _ in range(20):
            start = time.perf_counter()
            assert httpx.get(f"{url}/health", timeout=10).status_code == 200
            health.append(time.perf_counter() - start)
        assert max(health) < 1.0, health
        assert proc.poll() is None
    finally:
        for s in slow:
            s.close()
        proc.terminate()
        proc.wait(30)
