"""The one place that decides what an exception means over HTTP.

Domain errors, FastAPI's validation errors, routing errors and anything unexpected all leave as

    {"error": {"type": "...", "message": "...", "field": "width" | null, "details": [...]}}

Under /v1/ (the OpenAI-compatible API) the same information leaves in OpenAI's shape instead, so the official
clients raise their usual exceptions; under /sdapi/ (the AUTOMATIC1111 API) it leaves in A1111's,
`{"error": type, "detail": message, "field": ..., "errors": details}`, since its clients show `detail`.
`render_error` is the one place that picks the shape (the auth and body-limit middlewares use it too).

Unexpected exceptions are logged with their traceback and answered with a generic 500 that carries no
paths or internals.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.routing import Match
from starlette.types import Scope

from app.a1111_schemas import A1111_FIELDS
from app.api.validation import validation_details
from app.errors import ServiceError

logger = logging.getLogger(__name__)


OPENAI_PREFIX = "/v1/"
A1111_PREFIX = "/sdapi/"

# THE table: every error type the engine, the storage and the API raise, and the HTTP status it is answered with.
STATUS: dict[str, int] = {
    "invalid_request": 422,
    "invalid_id": 422,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "cancelled": 409,
    "other_replica": 409,
    "payload_too_large": 413,
    "does_not_fit": 422,
    "unsupported_media_type": 415,
    "queue_full": 429,
    "internal_error": 500,
    "generation_failed": 500,
    "not_ready": 503,
    "busy": 503,
    "shutting_down": 503,
    "queue_timeout": 503,
    "replica_lost": 503,
    "out_of_memory": 503,
    "model_load_failed": 503,
    "storage_unavailable": 503,
    "storage_full": 507,
}
# A 503 says "try again": when the error itself does not say when, clients are told this.
RETRY_AFTER_S = 5


def status_of(type_: str) -> int:
    return STATUS.get(type_, 500)


def retry_headers(status: int, retry_after: float | None) -> dict[str, str]:
    if retry_after is None and status == 503:
        retry_after = RETRY_AFTER_S
    return {} if retry_after is None else {"Retry-After": str(max(1, round(retry_after)))}


def error_body(
    type_: str, message: str, *, field: str | None = None, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, "field": field, "details": details or []}}


def route_path(scope: Scope) -> str:
    # The path the router will match: a root_path prefix is stripped the same way the router strips it.
    # (the same rule as starlette's own get_route_path).
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path != root and path[len(root)] == "/":
        return path[len(root) :]
    return path


def _openai_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def render_error(
    path: str,
    status: int,
    type_: str,
    message: str,
    *,
    field: str | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """One error, in our shape, in OpenAI's (`{"error": {message, type, param, code}}`) under /v1/, or in A1111's
    (FastAPI's `detail`, beside A1111's own `error` and `errors`, and the field named) under /sdapi/."""
    if path.startswith(OPENAI_PREFIX):
        body: dict[str, Any] = {
            "error": {"message": message, "type": _openai_type(status), "param": field, "code": type_}
        }
    elif path.startswith(A1111_PREFIX):
        # txt2img/img2img become our requests: their errors name the A1111 field the client sent instead.
        rename = a1111_field if path.endswith(("/txt2img", "/img2img")) else (lambda name: name)
        named = [{**d, "field": rename(d["field"])} for d in details or []]
        body = {"error": type_, "detail": message, "field": rename(field), "errors": named}
    else:
        body = error_body(type_, message, field=field, details=details)
    return JSONResponse(body, status_code=status, headers=headers)


def a1111_field(field: str | None) -> str | None:
    """Our field as the A1111 field it was built from ("loras[0].name" -> "prompt", where the tag was)."""
    if field is None:
        return None
    return A1111_FIELDS.get(re.split(r"[.\[]", field, maxsplit=1)[0], field)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    status = status_of(exc.type)
    if status >= 500:
        logger.warning("%s: %s", exc.type, exc.message)
    path = route_path(request.scope)
    headers = retry_headers(status, exc.retry_after)
    return render_error(path, status, exc.type, exc.message, field=exc.field, details=exc.details, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    route = request.scope.get("route")
    template = getattr(route, "path", None) or route_path(request.scope)
    content_type = request.headers.get("content-type")
    details = validation_details(exc, request.app.openapi(), template, request.method, content_type)
    first = details[0] if details else {"field": "body", "message": "invalid request"}
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
    path = route_path(request.scope)
    return render_error(path, 422, "invalid_request", message, field=first["field"], details=details)


_HTTP_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


# FastAPI answers a body that is not UTF-8 with this 400; it is an invalid body like any other (422).
_UNPARSABLE_BODY = "There was an error parsing the body"


def _allowed_methods(scope: Scope, routes: Any) -> set[str]:
    """Every method of every route on this path: starlette's own header names only the first route's."""
    methods: set[str] = set()
    probe = {**scope, "method": "\0"}  # a method no route has: a match is then a path-only match
    for route in routes:
        if route.matches(probe)[0] is Match.NONE:
            continue
        methods |= set(getattr(route, "methods", None) or ())
        # FastAPI keeps included routers whole; their routes carry their full paths (no prefixes here).
        if (included := getattr(route, "original_router", None)) is not None:
            methods |= _allowed_methods(scope, included.routes)
    return methods


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    path = route_path(request.scope)
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        message = "body: the request body is not valid UTF-8 JSON"
        if isinstance(exc.__cause__, RecursionError):  # json.loads gives up past ~1000 levels
            message = "body: the JSON nests arrays or objects too deeply"
        elif isinstance(exc.__cause__, ValueError) and "digits" in str(exc.__cause__):  # int_max_str_digits
            message = f"body: a number in it has more than {sys.get_int_max_str_digits()} digits"
        return render_error(path, 422, "invalid_request", message, field="body")
    if exc.status_code == 400 and isinstance(exc.__context__, MultiPartException):  # Starlette's form parser
        message = f"body: the multipart form could not be read ({exc.detail}); send multipart/form-data"
        return render_error(path, 422, "invalid_request", message, field="body")
    type_ = _HTTP_TYPES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405 and (methods := _allowed_methods(request.scope, request.app.router.routes)):
        headers["Allow"] = ", ".join(sorted(methods))
    return render_error(path, exc.status_code, type_, message, headers=headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return render_error(route_path(request.scope), 500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
