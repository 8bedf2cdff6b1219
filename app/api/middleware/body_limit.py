"""A request-body ceiling enforced as pure ASGI middleware, before anything parses the body.

A declared Content-Length over the limit is answered 413 at once, without reading a byte of the body.
A body without one (chunked transfer) is counted as it streams; the chunk that passes the limit raises
`BodyTooLarge` from `receive`, which FastAPI re-raises untouched and the error handlers turn into the one JSON
error shape.

Size alone does not bound what parsing costs: 16 MiB of `[],[],...` is 5.6 million lists, ~430 MB and seconds of the
event loop in `json.loads` and validation. So a body that may be parsed as JSON (any but a form's) is also refused
(413) once it holds more than `MAX_JSON_TOKENS` of the characters that start a value or separate two (`, : [ {`),
counted per chunk as it streams (~0.15 ms per 64 KiB) and before a byte of it is parsed. They are counted inside
strings too (an upper bound, no parser state): no field of ours needs many of them — four prompts of 2000 commas are
8000 — and base64 image text holds none, so only fields that carry images can be large, and a body that is parsed
costs about its size.
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


MAX_JSON_TOKENS = 20_000
_TOKENS = b",:[{"


class TooComplex(HTTPException):
    def __init__(self) -> None:
        super().__init__(
            413,
            f"the JSON body holds more than {MAX_JSON_TOKENS} values (counted as the characters , : [ {{); "
            "only fields that carry images may be large",
        )


def json_tokens(chunk: bytes) -> int:
    return len(chunk) - len(chunk.translate(None, _TOKENS))


_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


def may_be_parsed_as_json(headers: Headers) -> bool:
    # Whatever the Content-Type says, or without one: the A1111 surface parses every body as JSON (Dify sends JSON
    # with none). Only a form is not: its file parts are binary, where the counted bytes are ~1.5 % of all.
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return content_type not in _FORMS


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
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _too_large(scope, limit, setting)(scope, receive, send)
            return

        received, tokens = 0, 0
        count_tokens = may_be_parsed_as_json(headers)
        started = False

        async def counted_receive() -> Message:
            nonlocal received, tokens
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise BodyTooLarge(limit, setting)
                if count_tokens:
                    tokens += json_tokens(chunk)
                    if tokens > MAX_JSON_TOKENS:
                        raise TooComplex
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except (BodyTooLarge, TooComplex) as refused:
            # Normally the app's error handlers answer it; this covers a reader outside their reach.
            if started:
                raise
            await _refuse(scope, refused.detail)(scope, receive, send)


def _too_large(scope: Scope, limit: int, setting: str) -> JSONResponse:
    return _refuse(scope, BodyTooLarge(limit, setting).detail)


def _refuse(scope: Scope, message: str) -> JSONResponse:
    # Connection: close: the rest of the body is never read, so the connection cannot be reused.
    headers = {"Connection": "close"}
    return render_error(route_path(scope), 413, "payload_too_large", message, headers=headers)
