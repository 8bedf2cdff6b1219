"""Domain errors: engine and storage code raise these, never HTTP exceptions.

Each carries a stable `type` and, where waiting helps, `retry_after` (seconds). Nothing here knows HTTP:
`app.api.errors` holds the one table that gives each type its status, and turns these (and FastAPI's own errors)
into the one JSON error shape.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base of every error the service answers on purpose."""

    type = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        details: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details or []
        self.retry_after = retry_after  # seconds after which the same request may succeed


class InvalidRequest(ServiceError):
    type = "invalid_request"


class InvalidId(ServiceError):
    type = "invalid_id"


class NotFound(ServiceError):
    type = "not_found"


class Unauthorized(ServiceError):
    type = "unauthorized"


class NotReady(ServiceError):
    type = "not_ready"


class ModelLoadError(ServiceError):
    """`message` is the caller's: what failed, the kind of error and what to do. `cause` is the library's own text,
    for the operator's log only: it names paths and options (diffusers' "pass local_files_only=False") that an
    API caller cannot act on."""

    type = "model_load_failed"

    def __init__(self, message: str, *, cause: str | None = None, retry_after: float | None = None):
        super().__init__(message, retry_after=retry_after)
        self.cause = cause

    @property
    def for_operator(self) -> str:
        return f"{self.message} [{self.cause}]" if self.cause else self.message


class DoesNotFit(ServiceError):
    """The request is valid but its estimated peak memory exceeds this device's; the message names what fits."""

    type = "does_not_fit"


class StorageFull(ServiceError):
    type = "storage_full"


class StorageUnavailable(ServiceError):
    type = "storage_unavailable"


class OtherReplica(ServiceError):
    """The job runs on another replica: only that one can change it."""

    type = "other_replica"


class GenerationFailed(ServiceError):
    type = "generation_failed"


def first_line(exc: BaseException) -> str:
    """`Type: the message's first line`: for the one-line startup errors, where the rest (advice meant for a
    developer at a shell, a traceback reference) would only mislead."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError, or a RuntimeError saying so (other backends, older torch), or either as a cause."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if type(current).__name__ == "OutOfMemoryError" or "out of memory" in str(current).lower():
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
