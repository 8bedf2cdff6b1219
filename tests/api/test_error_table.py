"""The one table: every error type the service can raise has its status there, and only there."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import TypeVar

import pytest

import app.engine.gpu.scheduler
import app.engine.service  # noqa: F401 - defines JobFailed
from app.api.errors import RETRY_AFTER_S, STATUS, retry_headers, status_of
from app.errors import ServiceError

ROOT = Path(__file__).resolve().parents[2]
NO_HTTP = [ROOT / "app" / "engine", ROOT / "app" / "storage", ROOT / "app" / "errors.py"]

T = TypeVar("T")


def _subclasses(cls: type[T]) -> set[type[T]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def _job_failure_types() -> set[str]:
    """The literal types given to JobFailure(...) anywhere in the engine."""
    types = set()
    for path in (ROOT / "app" / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "JobFailure" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    types.add(first.value)
    return types


def test_every_domain_error_type_has_a_status() -> None:
    types = {cls.type for cls in _subclasses(ServiceError) if "type" in vars(cls)}
    assert {"queue_full", "shutting_down", "not_ready", "storage_full"} <= types  # the walk found them
    assert types - set(STATUS) == set()


def test_every_job_failure_type_has_a_status() -> None:
    types = _job_failure_types()
    assert {"cancelled", "out_of_memory", "queue_timeout", "shutting_down", "generation_failed"} <= types
    assert types - set(STATUS) == set()


@pytest.mark.parametrize(("type_", "status"), [("queue_full", 429), ("storage_full", 507), ("cancelled", 409)])
def test_statuses(type_: str, status: int) -> None:
    assert status_of(type_) == status
    assert status_of("something_new") == 500


def test_retry_after_comes_from_the_error_else_every_503_gets_the_default() -> None:
    assert retry_headers(429, 7.4) == {"Retry-After": "7"}
    assert retry_headers(503, None) == {"Retry-After": str(RETRY_AFTER_S)}
    assert retry_headers(503, 0.2) == {"Retry-After": "1"}
    assert retry_headers(422, None) == {}


@pytest.mark.parametrize("path", [p for room in NO_HTTP for p in ([room] if room.is_file() else room.rglob("*.py"))])
def test_below_the_api_nothing_knows_http(path: Path) -> None:
    """The engine and storage never import the web framework nor pick a status or a header (events/ may: its
    webhook client reads the receivers' statuses)."""
    text = path.read_text()
    assert not re.search(r"^\s*(from|import) (fastapi|starlette)\b", text, re.M), path
    assert "status_code" not in text and "Retry-After" not in text, path
