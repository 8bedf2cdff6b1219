"""The service serves on asyncio's loop, because of what happens when accept fails: asyncio logs it and listens
again a second later. uvloop (which uvicorn's default "auto" picks when it is installed) closes the listening socket
without a word, and the process answers nothing more, /health included."""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer


def test_a_failed_accept_is_logged_and_listening_resumes(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    @server.app.get("/_test/loop")
    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    accept = socket.socket.accept
    failed_at: list[float] = []

    def out_of_buffers(sock: socket.socket) -> Any:
        """ENOBUFS once, then nothing to accept for 0.5 s (asyncio tries again at once in the same tick)."""
        if not failed_at:
            failed_at.append(time.monotonic())
            raise OSError(errno.ENOBUFS, "No buffer space available")
        if time.monotonic() - failed_at[0] < 0.5:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return accept(sock)

    # The class, not the listening socket (its slots take no attributes); only the server accepts in this process.
    # A loop that accepts in C (uvloop) never calls it, so nothing fails and the test fails.
    monkeypatch.setattr(socket.socket, "accept", out_of_buffers)
    started = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=10) as client:  # a new connection: the one accept fails on
        assert client.get("/_test/loop").json() == "asyncio.unix_events"
    waited = time.monotonic() - started
    assert failed_at
    assert 0.9 < waited < 5, waited  # asyncio listens again after ACCEPT_RETRY_DELAY (1 s), then takes it
    assert "socket.accept() out of system resource" in caplog.text
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/health").status_code == 200
