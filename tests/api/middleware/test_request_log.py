"""What a client controls never forges a log line nor adds a metrics series (issue 13, items 2 and 3)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.api.middleware.request_log import KNOWN_METHODS, MAX_LOGGED_PATH, loggable, method_label
from tests.conftest import LiveServer, start_server, tiny_settings


def test_control_characters_are_escaped_and_length_bounded() -> None:
    assert loggable("/a\r\nINFO app.requests: forged 200") == "/a\\r\\nINFO app.requests: forged 200"
    assert "\n" not in loggable("\x00\x1b[31m\n\x85") and "\\x1b" in loggable("\x1b")
    assert loggable("/a\\r\\n") == "/a\\\\r\\\\n"  # a literal backslash cannot imitate an escape
    assert len(loggable("/" + "x" * 10_000)) == MAX_LOGGED_PATH + 3


def test_methods_outside_the_fixed_set_share_one_label() -> None:
    assert {method_label(m) for m in KNOWN_METHODS} == set(KNOWN_METHODS)
    assert method_label("BREW") == method_label("X" * 4000) == "other"


@pytest.fixture(scope="module")
def live(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tiny_settings(model_cache, tmp_path_factory.mktemp("images")))
    yield server
    server.stop()


def _raw(live: LiveServer, request: bytes) -> bytes:
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        return conn.recv(65536)


def test_a_forged_line_in_the_path_stays_on_its_own_line(live: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="app.requests"):
        _raw(live, b"GET /health%0D%0AINFO%20app.requests%20forged HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        # The line is written after the response is sent: wait for it.
        deadline = time.monotonic() + 10
        lines: list[str] = []
        while time.monotonic() < deadline:
            lines = [r.getMessage() for r in caplog.records if r.name == "app.requests" and "forged" in r.getMessage()]
            if lines:
                break
            time.sleep(0.02)
    assert lines and all("\n" not in line and "\r" not in line for line in lines), lines


def test_three_hundred_made_up_methods_add_no_series(live: LiveServer) -> None:
    def series(c: httpx.Client) -> set[str]:
        return {line.split(" ")[0] for line in c.get("/metrics").text.splitlines() if line.startswith("sdxl_http")}

    with live.client() as c:
        c.get("/health")
        series(c)  # /metrics' own series exist from here on
        before = series(c)
        for i in range(300):
            _raw(live, f"M{i:03d}{'X' * 40} /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        c.get("/health")
        after = series(c)
    added = after - before
    assert all('method="other"' in s for s in added), added
    assert len(added) <= 4, added  # the "other" method's counter, histogram buckets aside, once
