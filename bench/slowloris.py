"""`python -m bench.slowloris`: slow clients against the service, before and after app/server (issue 13, item 1).

Two servers in turn, each its own process on 127.0.0.1 with the tiny model and a low open-file limit (`--nofile`,
default 256, as in the issue): plain uvicorn running the same app ("before"), and `python -m app serve` ("after",
SDXL_HEADER_TIMEOUT_S / SDXL_BODY_TIMEOUT_S = `--timeout`, default 10 s, so that timeouts show within the run).
For `--seconds` (default 25) an attacker keeps `--slow` (default 1000) connections open that send half a request head
and one more header byte per second, plus 50 that send 14 bytes of a 100-byte body, re-opening any the server
closes. Meanwhile /health is asked every 100 ms on a new connection (5 s timeout). Printed per server: connections
opened and closed by the server, how many it held at the end, /health answered / failed and its p50/p99, the peak of
the server's open descriptors, and how many bytes it logged. Bounded in count and time; loopback only.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.server import HOST, free_port

HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\n"
SHORT_BODY = b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b'{"prompt": "x"'
SHORT_BODIES = 50


def _serve_plain(port: int, cache: str, images: str) -> None:
    """The child for "before": the app under uvicorn's defaults (what the CLI ran before app/server)."""
    import uvicorn

    from app.config import Settings
    from app.main import create_app

    settings = Settings(model="tiny", cache_dir=Path(cache), image_dir=Path(images), host=HOST, port=port)
    uvicorn.run(create_app(settings), host=HOST, port=port, log_config=None, access_log=False, http="h11")


class Attacker:
    def __init__(self, port: int, slow: int) -> None:
        self.port, self.slow = port, slow
        self.selector = selectors.DefaultSelector()
        self.opened = self.closed_by_server = 0

    def _open(self, first: bytes) -> None:
        try:
            s = socket.create_connection((HOST, self.port), timeout=2)
            s.sendall(first)
        except OSError:
            return
        s.setblocking(False)
        self.selector.register(s, selectors.EVENT_READ, first is HEAD)
        self.opened += 1

    def top_up(self) -> None:
        held = [key.data for key in self.selector.get_map().values()]
        for _ in range(self.slow - sum(held)):
            self._open(HEAD)
        for _ in range(SHORT_BODIES - (len(held) - sum(held))):
            self._open(SHORT_BODY)

    def reap(self) -> None:
        """Drop the connections the server answered or closed."""
        for key, _ in self.selector.select(timeout=0):
            sock: Any = key.fileobj
            with contextlib.suppress(OSError):
                sock.recv(65536)
            self.selector.unregister(sock)
            sock.close()
            self.closed_by_server += 1

    def trickle(self) -> None:
        for key in list(self.selector.get_map().values()):
            if key.data:  # a half head: one more header byte
                with contextlib.suppress(OSError):
                    key.fileobj.send(b"X")  # type: ignore[union-attr]

    def held(self) -> int:
        return len(self.selector.get_map())

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]


def _probe(url: str, stop: threading.Event, out: list[float | None]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        try:
            ok = httpx.get(f"{url}/health", timeout=5).status_code == 200
            out.append((time.perf_counter() - start) * 1000 if ok else None)
        except httpx.HTTPError:
            out.append(None)
        time.sleep(0.1)


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def attack(name: str, command: list[str], env: dict[str, str], port: int, args: argparse.Namespace) -> dict[str, Any]:
    url = f"http://{HOST}:{port}"
    nofile = args.nofile
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)),
        )
        try:
            _wait_ready(url, proc, name)
            log.seek(0, 2)
            logged_before = log.tell()
            attacker, stop, health = Attacker(port, args.slow), threading.Event(), list[float | None]()
            probe = threading.Thread(target=_probe, args=(url, stop, health))
            probe.start()
            peak_fds, end = 0, time.monotonic() + args.seconds
            while time.monotonic() < end:
                attacker.top_up()
                attacker.reap()
                attacker.trickle()
                peak_fds = max(peak_fds, _fds(proc.pid))
                time.sleep(1.0)
            stop.set()
            probe.join()
            held = attacker.held()
            attacker.close()
            log.seek(logged_before)
            lines = log.read().splitlines()
            logged = sum(len(line) + 1 for line in lines)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    answered = sorted(ms for ms in health if ms is not None)
    return {
        "server": name,
        "opened": attacker.opened,
        "closed_by_server": attacker.closed_by_server,
        "held_at_end": held,
        "health_ok": len(answered),
        "health_failed": len(health) - len(answered),
        "health_p50_ms": round(statistics.median(answered), 1) if answered else None,
        "health_p99_ms": round(answered[int(0.99 * (len(answered) - 1))], 1) if answered else None,
        "peak_server_fds": peak_fds,
        "log_bytes": logged,
        "log_lines": len(lines),
        "commonest_log_lines": collections.Counter(_shape(line) for line in lines).most_common(3),
    }


def _shape(line: bytes) -> str:
    """A log line without its timestamp and numbers, so that lines of one kind count together."""
    text = line.decode(errors="replace").split(" ", 2)[-1]
    return re.sub(r"[0-9a-f]{32}|\d+(\.\d+)?", "N", text)[:100]


def _wait_ready(url: str, proc: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.slowloris")
    parser.add_argument("--slow", type=int, default=1000, help="slow connections kept open (default 1000)")
    parser.add_argument("--seconds", type=float, default=25, help="length of each attack (default 25)")
    parser.add_argument("--nofile", type=int, default=256, help="the servers' open-file limit (default 256)")
    parser.add_argument("--timeout", type=float, default=10, help="header and body timeouts of 'after' (default 10)")
    parser.add_argument("--serve-plain", nargs=3, metavar=("PORT", "CACHE", "IMAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_plain:
        port, cache, images = args.serve_plain
        _serve_plain(int(port), cache, images)
        return
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the attacker's own limit: room for its sockets
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.slow + 2 * SHORT_BODIES + 512), hard))
    from app.engine.models.tiny.build import ensure_tiny_models

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "models"
        ensure_tiny_models(cache)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SDXL_") and k != "GENERATION_AUTH_KEY"}
        env.update(HF_HUB_OFFLINE="1", SDXL_CACHE_DIR=str(cache), IMAGE_DIR=str(Path(tmp) / "images"))
        port = free_port()
        before = [sys.executable, "-m", "bench.slowloris", "--serve-plain", str(port), str(cache), f"{tmp}/images"]
        print(json.dumps(attack("before: plain uvicorn", before, env, port, args)), flush=True)
        port = free_port()
        timeouts = {"SDXL_HEADER_TIMEOUT_S": str(args.timeout), "SDXL_BODY_TIMEOUT_S": str(args.timeout)}
        after = [sys.executable, "-m", "app", "serve", "--port", str(port), "--model", "tiny"]
        print(json.dumps(attack("after: app/server", after, {**env, **timeouts}, port, args)), flush=True)


if __name__ == "__main__":
    main()
