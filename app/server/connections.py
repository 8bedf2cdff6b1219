"""Connections: time limits on slow clients and a cap on how many are open at once.

uvicorn times out only keep-alive connections that are idle: a client that sends half a request head, or a body
shorter than its Content-Length, holds its connection (and a file descriptor) for ever. Enough of them exhaust the
open-file limit; then every accept fails ("Too many open files", logged in a loop) and /health is down too.
The rules kept here are nginx's:
- a request head (request line and headers) must arrive whole within SDXL_HEADER_TIMEOUT_S of the connection opening
  or of its previous response ending (nginx: client_header_timeout 60 s, for the whole head);
- a body may stall at most SDXL_BODY_TIMEOUT_S between two reads (client_body_timeout 60 s, per read);
either way the client gets a 408 and the connection is closed. And a cap: past SDXL_MAX_CONNECTIONS the oldest
connection that is waiting for a request head (a slow one, or one idle between requests) is closed to make room, so
a new client, a health check say, is served whatever the slow ones do; only when every connection has a request in
progress is the new one refused (503). server_config keeps the cap below the open-file limit, so accept never fails.

This is uvicorn's own h11 protocol (uvicorn takes a protocol class for `http`), with these limits and the strict
reader of strict_h11.py: the lifespan, graceful stop and the rest of uvicorn stay as they are.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.api.errors import error_body
from app.server.strict_h11 import StrictConnection

logger = logging.getLogger(__name__)

LOG_EVERY_S = 60.0  # closures are counted and logged once per interval: an attack cannot flood the log


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int


def _response(status: str, type_: str, message: str) -> bytes:
    body = json.dumps(error_body(type_, message)).encode()
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + b"connection: close\r\n\r\n" + body


class Room:
    """What the connections of one server share: the ones waiting for a request head, oldest first (those may be
    closed to make room), how many are open, and the tally of closed ones."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.waiting: OrderedDict[LimitedH11Protocol, None] = OrderedDict()
        self.open = 0
        self._closed: Counter[str] = Counter()
        self._flush: asyncio.TimerHandle | None = None

    def make_room(self, newcomer: LimitedH11Protocol) -> None:
        while self.open > self.limits.max_connections:
            victim = next((c for c in self.waiting if c is not newcomer), None)
            if victim is None:  # every other connection has a request in progress
                newcomer.refuse()
                return
            victim.close("evicted")

    def count(self, reason: str) -> None:
        self._closed[reason] += 1
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(LOG_EVERY_S, self.log)

    def log(self) -> None:
        self._flush = None
        if self._closed:
            limits = self.limits
            why = {
                "head_timeout": f"no whole request head within {limits.header_timeout_s:g} s",
                "body_timeout": f"the body stalled for {limits.body_timeout_s:g} s",
                "evicted": f"waiting for a request head when {limits.max_connections} connections were open",
                "refused": f"{limits.max_connections} connections were open, each with a request in progress",
            }
            parts = ", ".join(f"{n} ({why[reason]})" for reason, n in self._closed.most_common())
            logger.warning("closed %d connections: %s", self._closed.total(), parts)
            self._closed.clear()


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the strict reader, time limits on the head and the body, and the room's cap."""

    room: ClassVar[Room]  # set on the subclass that protocol_class makes for each server

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        size = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        self.conn = StrictConnection(self._saw, size)
        self._deadline: asyncio.TimerHandle | None = None
        self._counted = False

    # --- uvicorn's hooks ---------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.room.open += 1
        self._counted = True
        self._await_head()
        self.room.make_room(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_head()

    def send_400_response(self, msg: str) -> None:
        super().send_400_response(getattr(self.conn, "refusal", None) or msg)
        self._release()

    # --- the limits ----------------------------------------------------------------------------------------------
    def _saw(self, event: Any) -> None:
        """Called by the h11 connection for every event it yields."""
        if isinstance(event, h11.Request):
            self.room.waiting.pop(self, None)
            self._arm("body_timeout", self.room.limits.body_timeout_s)
        elif isinstance(event, h11.Data):
            self._arm("body_timeout", self.room.limits.body_timeout_s)
        elif isinstance(event, h11.EndOfMessage):
            self._disarm()  # the app has the whole request; how long it takes to answer is not the client's doing

    def _await_head(self) -> None:
        self.room.waiting[self] = None
        self._arm("head_timeout", self.room.limits.header_timeout_s)

    def _arm(self, reason: str, after_s: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(after_s, self._expire, reason, after_s)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, reason: str, after_s: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # we stopped reading (the app has not asked for more of the body): not the client
            self._arm(reason, after_s)
            return
        if reason == "head_timeout" or not (self.cycle and self.cycle.response_started):
            what = "request head" if reason == "head_timeout" else "request body"
            self.transport.write(
                _response("408 Request Timeout", "request_timeout", f"the {what} did not arrive in {after_s:g} s")
            )
        self.close(reason)

    def refuse(self) -> None:
        message = "the server has too many open connections; retry later"
        self.transport.write(_response("503 Service Unavailable", "busy", message))
        self.close("refused")

    def close(self, reason: str) -> None:
        self.room.count(reason)
        self._release()
        self.transport.close()

    def _release(self) -> None:
        self._disarm()
        self.room.waiting.pop(self, None)
        if self._counted:
            self._counted = False
            self.room.open -= 1


def protocol_class(limits: ConnectionLimits) -> type[LimitedH11Protocol]:
    """A protocol class for one server: its connections share one Room."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,), {"room": Room(limits)})
