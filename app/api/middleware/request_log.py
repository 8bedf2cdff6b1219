"""One log line per request, with its id and the engine's timings (queue, inference, encode, store)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("app.requests")

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Metrics labels come from fixed sets only: a made-up method must not add a series (nor a long one grow /metrics).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
MAX_LOGGED_PATH = 512


def loggable(text: str) -> str:
    """What a client sent, safe for a one-line log: control characters (CR, LF: forged lines) and backslashes
    escaped, and bounded in length."""
    escaped = _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode(), text)
    return escaped if len(escaped) <= MAX_LOGGED_PATH else escaped[:MAX_LOGGED_PATH] + "..."


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Reuse a caller's id (e.g. from a proxy) only if it is harmless to echo into logs and headers.
        offered = Headers(scope=scope).get("x-request-id", "")
        request_id = offered if _SAFE_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            _observe(scope, status, elapsed)
            timings = state.get("timings") or {}
            extra = " ".join(f"{k}={v:.1f}" for k, v in timings.items())
            logger.info(
                "%s %s %s %d %.1fms %s",
                request_id,
                loggable(scope["method"]),
                loggable(scope["path"]),
                status,
                (time.perf_counter() - started) * 1000,
                extra,
            )


def _observe(scope: Scope, status: int, seconds: float) -> None:
    service = getattr(scope["app"].state, "service", None)
    if service is None:  # before startup
        return
    # The route's template, never the raw path: ids and junk paths must not explode label cardinality.
    route = getattr(scope.get("route"), "path", "unmatched")
    service.observe_request(route, method_label(scope["method"]), status, seconds)
