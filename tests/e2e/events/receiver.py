"""A real webhook receiver on 127.0.0.1: records every request, can fail the first N or answer slowly."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


class Receiver:
    def __init__(self, fail_first: int = 0, fail_status: int = 500, delay_s: float = 0.0, trickle_s: float = 0.0):
        """trickle_s: answer at once, then send the body one byte every trickle_s (each read is quick, the answer
        never whole)."""
        self.fail_first, self.fail_status, self.delay_s, self.trickle_s = fail_first, fail_status, delay_s, trickle_s
        self.requests: list[Received] = []
        self.release = threading.Event()  # set: stop delaying (so teardown does not wait out the delays)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    status = receiver.fail_status if len(receiver.requests) < receiver.fail_first else 200
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.requests.append(Received(self.path, headers, body, status))
                if receiver.delay_s:
                    receiver.release.wait(receiver.delay_s)
                self.send_response(status)
                if receiver.trickle_s:
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    with contextlib.suppress(OSError):  # the sender hung up
                        while not receiver.release.wait(receiver.trickle_s):
                            self.wfile.write(b"x")
                            self.wfile.flush()
                    return
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def events(self, event: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.headers.get("x-sdxl-event") == event]

    def wait_for(self, event: str, count: int = 1, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(found := self.events(event)) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"{event}: {len(self.events(event))} received, expected {count}")

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
