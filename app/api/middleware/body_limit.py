"""A request-body ceiling enforced as pure ASGI middleware, before anything parses the body.

A declared Content-Length over the limit is answered 413 at once, without reading a byte of the body.
A body without one (chunked transfer) is counted as it streams; the chunk that passes the limit raises
`BodyTooLarge` from `receive`, which FastAPI re-raises untouched and the error handlers turn into the one JSON
error shape. The limit bounds what a request can make the JSON parser allocate (no API field needs more than a
few kilobytes), so abusive bodies are refused before they cost memory or CPU.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import render_error, route_path


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, setting: str = "SDXL_MAX_BODY_BYTES"):
        super().__init__(413, f"request body is larger than the limit of {limit} bytes ({setting})")


class BodyLimitMiddleware:
    """`upload_paths` (routes whose bodies carry base64 images) get `upload_bytes`; every other route `max_bytes`."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, upload_bytes: int | None = None, upload_paths: tuple[str, ...] = ()
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.upload_bytes = upload_bytes or max_bytes
        self.upload_paths = frozenset(upload_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = route_path(scope) in self.upload_paths and scope.get("method") == "POST"
        limit = self.upload_bytes if upload else self.max_bytes
        setting = "SDXL_MAX_UPLOAD_BYTES" if upload else "SDXL_MAX_BODY_BYTES"
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _too_large(scope, limit, setting)(scope, receive, send)
            return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            # Normally the app's error handlers answer it; this covers a reader outside their reach.
            if started:
                raise
            await _too_large(scope, limit, setting)(scope, receive, send)


def _too_large(scope: Scope, limit: int, setting: str) -> JSONResponse:
    # Connection: close: the rest of the body is never read, so the connection cannot be reused.
    message = BodyTooLarge(limit, setting).detail
    headers = {"Connection": "close"}
    return render_error(route_path(scope), 413, "payload_too_large", message, headers=headers)
