"""At most N requests with large bodies in the service at once, so that memory has a stated bound.

A request that carries images holds its body several times over while it is in the service: the bytes, the
parsed JSON string, the validated model (FastAPI keeps all three until the endpoint returns, and a synchronous
request returns only when its job has run) and the decoded image. Measured (bench/bodies.py): 12 concurrent
15 MiB img2img bodies through 4 slots peak at +345 MiB over the idle server, ~6x a body per slot. So N slots
bound that part of memory at about N x 6 x SDXL_MAX_UPLOAD_BYTES (4 x 6 x 16 MiB = 384 MiB by default).

"Large" is a body the small limit (SDXL_MAX_BODY_BYTES) does not cover: a declared Content-Length over it, or a
chunked body of unknown length, on a route that carries images. Other requests never wait here. A request waits
for a slot up to `wait_s`, its body unread (TCP holds the client back), then gets 503 `busy` with Retry-After.
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import render_error, retry_headers, route_path, status_of


class LargeBodySlotsMiddleware:
    def __init__(self, app: ASGIApp, *, slots: int, small_bytes: int, wait_s: float, paths: tuple[str, ...]):
        self.app = app
        self.slots, self.small_bytes, self.wait_s = slots, small_bytes, wait_s
        self.paths = frozenset(paths)
        self._free = asyncio.Semaphore(slots)

    def _is_large(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope.get("method") != "POST" or route_path(scope) not in self.paths:
            return False
        declared = Headers(scope=scope).get("content-length")
        if declared is None:
            return Headers(scope=scope).get("transfer-encoding") is not None  # chunked: size unknown
        return not declared.strip().isdigit() or int(declared) > self.small_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._is_large(scope):
            await self.app(scope, receive, send)
            return
        try:
            await asyncio.wait_for(self._free.acquire(), self.wait_s)
        except TimeoutError:
            message = (
                f"{self.slots} requests with large bodies are already being handled (SDXL_MAX_LARGE_BODIES); "
                "retry shortly"
            )
            status = status_of("busy")
            headers = {**retry_headers(status, None), "Connection": "close"}
            await render_error(route_path(scope), status, "busy", message, headers=headers)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._free.release()
