"""Slow clients and too many connections against a real server (app/server/connections.py), and the strict reader
over the wire (strict_h11.py): each test fails on plain uvicorn."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.server.strict_h11 import BOTH_FRAMINGS, FOLDED
from tests.conftest import LiveServer, start_server, tiny_settings

KEY = "connections-test-key"
CAP = 16  # the smallest SDXL_MAX_CONNECTIONS


@pytest.fixture(scope="module")
def strict(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = tiny_settings(
        model_cache,
        tmp_path_factory.mktemp("images"),
        generation_auth_key=KEY,
        header_timeout_s=1,
        body_timeout_s=1,
        max_connections=CAP,
    )
    live = start_server(settings)
    yield live
    live.stop()


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def _read_all(s: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection (b"" if it closes without a word)."""
    s.settimeout(timeout)
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def _body(reply: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(reply.partition(b"\r\n\r\n")[2])
    return body


def _health_ms(url: str) -> float:
    start = time.perf_counter()
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    return (time.perf_counter() - start) * 1000


def test_a_half_sent_head_gets_408_and_is_closed(strict: LiveServer) -> None:
    s = _connect(strict.url)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head never ends
    start = time.monotonic()
    reply = _read_all(s)
    waited = time.monotonic() - start
    assert _status(reply) == 408, reply
    assert _body(reply)["error"] == {
        "type": "request_timeout",
        "message": "the request head did not arrive in 1 s",
        "field": None,
        "details": [],
    }
    assert 0.9 < waited < 5


def test_a_head_sent_a_byte_at_a_time_is_cut_at_the_deadline(strict: LiveServer) -> None:
    """The head timeout is for the whole head (nginx's client_header_timeout): trickling bytes do not extend it."""
    s = _connect(strict.url)
    start = time.monotonic()
    closed = False
    for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40:
        try:
            s.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.05)
        if time.monotonic() - start > 3:
            break
    reply = b"" if closed else _read_all(s)
    assert closed or _status(reply) == 408
    assert time.monotonic() - start < 3


def test_a_body_shorter_than_its_length_is_answered_408(strict: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    s = _connect(strict.url)
    head = f"POST /generate HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\n"
    s.sendall(head.encode() + b"Content-Length: 100\r\n\r\n" + b'{"prompt": "x"')  # 14 of 100 bytes
    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        reply = _read_all(s)
        time.sleep(0.2)  # the app sees the disconnect
    assert _status(reply) == 408, reply
    assert _body(reply)["error"]["message"] == "the request body did not arrive in 1 s"
    assert time.monotonic() - start < 5
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text


def test_a_slow_but_steady_body_is_not_cut(strict: LiveServer) -> None:
    """The body timeout is per read (nginx's client_body_timeout): a body that keeps arriving is read whole."""
    body = json.dumps({"prompt": "x", "width": 100}).encode()  # refused by validation: cheap, and proves it was read
    s = _connect(strict.url)
    head = f"POST /generate HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\n"
    s.sendall(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode())
    start = time.monotonic()
    for i in range(0, len(body), 6):
        s.sendall(body[i : i + 6])
        time.sleep(0.25)
    assert time.monotonic() - start > 1.2  # longer than the body timeout in all
    reply = _read_all(s, timeout=10)
    assert _status(reply) == 422, reply


def test_slow_connections_past_the_cap_cannot_take_health_down(strict: LiveServer) -> None:
    """10x the cap in half-sent heads: the oldest are closed to make room, /health answers at once meanwhile, and
    the server never holds more than the cap."""
    slow = []
    for _ in range(10 * CAP):
        s = _connect(strict.url)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    times = [_health_ms(strict.url) for _ in range(20)]
    assert max(times) < 500, times
    held = len(strict.server.server_state.connections)
    assert held <= CAP + 1, held  # +1: the one just accepted, before it makes room
    closed = 0
    for s in slow:
        s.setblocking(False)
        try:
            closed += s.recv(1) == b""
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed += 1
        s.close()
    assert closed >= 9 * CAP - 1, closed  # evicted, oldest first


def test_when_every_connection_has_a_request_in_progress_a_new_one_gets_503(strict: LiveServer) -> None:
    """Connections part-way through a body are not closed to make room (their body timeout guards them): past the
    cap the newcomer is refused."""
    busy = []
    try:
        head = f"POST /generate HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\n"
        for _ in range(CAP):
            s = _connect(strict.url)
            s.sendall(head.encode() + b"Content-Length: 100\r\n\r\n{")
            busy.append(s)
        time.sleep(0.2)
        newcomer = _connect(strict.url)
        reply = _read_all(newcomer)
        assert _status(reply) == 503, reply
        assert _body(reply)["error"]["type"] == "busy"
    finally:
        for s in busy:
            s.close()
    time.sleep(0.3)
    assert _health_ms(strict.url) < 1000  # room again once they are gone


def _refusal(url: str, raw: bytes) -> bytes:
    s = _connect(url)
    s.sendall(raw)
    return _read_all(s)


def test_a_folded_key_header_is_refused_not_authenticated(strict: LiveServer) -> None:
    reply = _refusal(strict.url, f"GET /models HTTP/1.1\r\nHost: x\r\nX-API-Key:\r\n {KEY}\r\n\r\n".encode())
    assert _status(reply) == 400, reply
    assert FOLDED.encode() in reply and b'"models"' not in reply
    unfolded = _refusal(
        strict.url, f"GET /models HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nConnection: close\r\n\r\n".encode()
    )
    assert _status(unfolded) == 200  # the same key on one line is accepted


def test_content_length_with_chunked_is_refused(strict: LiveServer) -> None:
    body = b'{"prompt": "x"}'
    raw = (
        (
            f"POST /generate HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n"
        ).encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    reply = _refusal(strict.url, raw)
    assert _status(reply) == 400, reply
    assert BOTH_FRAMINGS.encode() in reply and b'"id"' not in reply
