"""A1111 bodies are JSON whatever their Content-Type says: Dify posts `data=json.dumps(...)` with none, which FastAPI
would leave unparsed. Parsed here, then validated like any body (a bad one is the same 422)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from app.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)


async def json_object(request: Request) -> dict[str, Any]:
    try:
        value = json.loads(await request.body() or b"{}")
    except (ValueError, RecursionError):
        raise InvalidRequest("body: is not valid JSON", field="body") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"body: must be a JSON object, got {type(value).__name__}", field="body")
    return value


def json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency giving the body as `model`, read as JSON with or without a Content-Type."""

    async def parse(request: Request) -> M:
        try:
            return model.model_validate(await json_object(request))
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None

    return parse
