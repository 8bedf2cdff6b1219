"""What the client raises: one class per kind of failure, built from the service's one JSON error shape,

    {"error": {"type": "...", "message": "...", "field": "width" | null, "details": [...]}}

so callers catch `NotFoundError` or `QueueFullError` instead of reading status codes. A job that ends failed or
cancelled carries only `{type, message}`; `error_from_job` maps its type onto the same classes.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx

from app.schemas import JobResponse


class SdxlError(Exception):
    """Base of every client error. `status_code` is None when no HTTP answer came back."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        type: str = "error",  # noqa: A002 - the service's name for it
        field: str | None = None,
        details: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = type
        self.field = field
        self.details = details or []
        self.retry_after = retry_after  # seconds, from the Retry-After header

    def __str__(self) -> str:
        where = f" [field: {self.field}]" if self.field else ""
        status = f"HTTP {self.status_code} " if self.status_code is not None else ""
        return f"{self.message}{where} ({status}{self.type})"


class SdxlConnectionError(SdxlError):
    """No HTTP answer: refused, unreachable, reset or timed out.

    `request_sent` is False only when the connection was never made, so the server cannot have acted on it."""

    def __init__(self, message: str, *, request_sent: bool, type: str = "connection_error"):  # noqa: A002
        super().__init__(message, type=type)
        self.request_sent = request_sent


class SdxlTimeoutError(SdxlConnectionError):
    pass


class InvalidRequestError(SdxlError):
    """422 (or 400): the request broke a limit; `field` names the culprit."""


class AuthenticationError(SdxlError):
    """401: missing or wrong API key."""


class NotFoundError(SdxlError):
    """404: unknown (or expired, or deleted) image or job."""


class ConflictError(SdxlError):
    """409: the job was cancelled, or runs on another replica."""


class PayloadTooLargeError(SdxlError):
    """413: the request body is over the service's limit."""


class QueueFullError(SdxlError):
    """429: the queue is full; `retry_after` says when to come back."""


class ServerError(SdxlError):
    """5xx: the service failed (500 hides the details on purpose)."""


class UnavailableError(ServerError):
    """503: not ready, shutting down, queue timeout, out of GPU memory or storage unreachable."""


class StorageFullError(ServerError):
    """507: the image store is full."""


_BY_STATUS: dict[int, type[SdxlError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: InvalidRequestError,
    429: QueueFullError,
    503: UnavailableError,
    507: StorageFullError,
}

# A job's error has no status code; these are the statuses the service answers for the same types.
_JOB_ERROR_STATUS = {
    "cancelled": 409,
    "queue_timeout": 503,
    "out_of_memory": 503,
    "shutting_down": 503,
    "replica_lost": 503,
    "not_ready": 503,
    "storage_unavailable": 503,
    "model_load_failed": 503,
    "storage_full": 507,
}


def _error_class(status: int) -> type[SdxlError]:
    return _BY_STATUS.get(status, ServerError if status >= 500 else SdxlError)


def parse_retry_after(value: str | None) -> float | None:
    """RFC 9110 Retry-After: delay-seconds or an HTTP date. Unparseable: None (the caller backs off instead)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_response(response: httpx.Response) -> SdxlError:
    """The error an HTTP answer stands for (the body must have been read)."""
    status = response.status_code
    try:
        error = response.json()["error"]
        type_, message = str(error["type"]), str(error["message"])
        field, details = error.get("field"), error.get("details") or []
    except (ValueError, KeyError, TypeError):
        # Not our shape: a proxy in front of the service, or an HTML error page.
        type_, message, field, details = "http_error", f"{response.reason_phrase or 'error'}", None, []
    return _error_class(status)(
        message,
        status_code=status,
        type=type_,
        field=field,
        details=details,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def error_from_job(job: JobResponse) -> SdxlError:
    """The error a job that did not succeed stands for, as if it had been answered synchronously."""
    if job.error is None:
        return SdxlError(f"job {job.id} ended {job.status}", type=job.status)
    status = _JOB_ERROR_STATUS.get(job.error.type, 500)
    return _error_class(status)(job.error.message, status_code=status, type=job.error.type)


def error_from_transport(exc: httpx.TransportError, url: str) -> SdxlConnectionError:
    # Only a failed connect proves the server never saw the request; anything later might have reached it.
    sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return SdxlTimeoutError(f"timed out talking to {url}: {detail}", request_sent=sent, type="timeout")
    what = "lost the connection to" if sent else "could not connect to"
    return SdxlConnectionError(f"{what} {url}: {detail}", request_sent=sent)
