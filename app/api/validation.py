"""What a validation error says: the field's whole rule, as the schema in /docs states it, and what was sent.

Pydantic names only the one bound that failed ("Input should be a multiple of 8"), so a caller who fixes that meets
the next bound in the next error. Here a bound's error states every constraint of the field at once ("a multiple of 8
between 256 and 2048, got 100"), read from the route's request body in the OpenAPI document: the message and /docs
can never disagree. A body that arrived without a JSON Content-Type says so, instead of "should be a valid
dictionary".
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

# Errors whose message becomes the field's rule (bounds, steps, lengths, and a wrong type where a number is due).
_BOUNDS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "multiple_of", "finite_number"}
_LENGTHS = {"string_too_short", "string_too_long"}
_TYPES = {"int_type", "float_type", "int_from_float", "int_parsing", "float_parsing", "string_type"}
_NOT_AN_OBJECT = {"model_attributes_type", "dict_type"}


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field_name(loc: tuple[Any, ...]) -> str:
    # ("body", "width") -> "width"; ("path", "id") -> "id"; nested lists keep their indices.
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _resolve(schema: dict[str, Any] | None, document: dict[str, Any]) -> dict[str, Any] | None:
    """Follow $ref (an OpenAPI component, or a model's own $defs) and take the non-null branch of an Optional."""
    definitions = {**document.get("$defs", {}), **document.get("components", {}).get("schemas", {})}
    for _ in range(8):
        if schema is None:
            return None
        if ref := schema.get("$ref"):
            schema = definitions.get(str(ref).rsplit("/", 1)[-1])
        elif choices := schema.get("anyOf"):
            schema = next((c for c in choices if c.get("type") != "null"), None)
        else:
            return schema
    return None


def field_schema(openapi: dict[str, Any], path: str, method: str, loc: tuple[Any, ...]) -> dict[str, Any] | None:
    """The schema of the field at `loc` of an operation, if it has one: a body field (("body", "loras", 0, "scale"))
    or a query, path or header parameter (("query", "limit"))."""
    if not loc:
        return None
    operation = openapi.get("paths", {}).get(path, {}).get(method.lower(), {})
    if loc[0] != "body":
        where, name = loc[0], loc[1] if len(loc) > 1 else None
        for parameter in operation.get("parameters", []):
            if parameter.get("in") == where and parameter.get("name") == name:
                return _resolve(parameter.get("schema"), openapi)
        return None
    content = operation.get("requestBody", {}).get("content", {})
    return field_schema_in(content.get("application/json", {}).get("schema"), openapi, loc[1:])


def field_schema_in(
    schema: dict[str, Any] | None, document: dict[str, Any], loc: tuple[Any, ...]
) -> dict[str, Any] | None:
    schema = _resolve(schema, document)
    for part in loc:
        if schema is None:
            return None
        key = "items" if isinstance(part, int) else None
        schema = _resolve(schema.get(key) if key else schema.get("properties", {}).get(part), document)
    return schema


def rule(schema: dict[str, Any]) -> str | None:
    """'a multiple of 8 between 256 and 2048', 'a number greater than 0 and at most 1', '1 to 2000 characters'."""
    kind = schema.get("type")
    if kind == "string":
        low, high = schema.get("minLength"), schema.get("maxLength")
        if low and high:
            return f"a string of {low} to {high} characters"
        return f"a string of at most {high} characters" if high else None
    if kind not in ("integer", "number"):
        return None
    step = schema.get("multipleOf")
    noun = f"a multiple of {_number(step)}" if step else ("an integer" if kind == "integer" else "a number")
    low, high = schema.get("minimum"), schema.get("maximum")
    above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if low is not None and high is not None:
        return f"{noun} between {_number(low)} and {_number(high)}"
    bounds = [
        *([f"at least {_number(low)}"] if low is not None else []),
        *([f"greater than {_number(above)}"] if above is not None else []),
        *([f"at most {_number(high)}"] if high is not None else []),
        *([f"less than {_number(below)}"] if below is not None else []),
    ]
    return " ".join([noun, " and ".join(bounds)]) if bounds else (noun if step else None)


def with_rules(model: type[BaseModel], errors: list[Any]) -> list[Any]:
    """A model's validation errors with each bound's message replaced by the field's whole rule, for the surfaces that
    validate our models themselves (OpenAI's, A1111's) and then rename the fields to their own."""
    document = _json_schema(model)
    rewritten = []
    for err in errors:
        schema = field_schema_in(document, document, tuple(err.get("loc", ())))
        text = rule(schema) if schema is not None and err.get("type") in _BOUNDS | _LENGTHS else None
        rewritten.append({**err, "msg": text} if text else err)
    return rewritten


@cache
def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def _got(err: dict[str, Any]) -> str:
    value = err.get("input")
    if err.get("type") in _LENGTHS and isinstance(value, str):
        return f"got {len(value)} characters"
    return f"got {_short(value)}"


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _message(err: dict[str, Any], schema: dict[str, Any] | None, content_type: str | None) -> str:
    type_ = err.get("type")
    if type_ == "missing":
        return "is required"
    if type_ in _NOT_AN_OBJECT and len(err.get("loc", ())) == 1 and _is_json(content_type):
        return f"must be a JSON object, got {_short(err.get('input'))}"  # parsed: a string, a list, a number
    if type_ in _NOT_AN_OBJECT and len(err.get("loc", ())) == 1 and isinstance(err.get("input"), bytes | str):
        # FastAPI parses a body as JSON only when the request says it is JSON; otherwise it hands on the bytes.
        sent = f"Content-Type: {content_type}" if content_type else "no Content-Type header"
        return f"must be a JSON object sent with the header Content-Type: application/json (the request had {sent})"
    text = rule(schema) if schema is not None and type_ in _BOUNDS | _LENGTHS | _TYPES else None
    if text is None and schema is not None and type_ in _TYPES and schema.get("type") in ("integer", "number"):
        text = "an integer" if schema["type"] == "integer" else "a number"  # a number with no bounds
    if text is None:
        text = str(err.get("msg", "invalid value"))
    elif type_ in _TYPES and type_ != "string_type" and tuple(err.get("loc", ()))[:1] == ("body",):
        text += " (a JSON number)"  # a query parameter is text by nature
    return f"{text}, {_got(err)}" if "input" in err else text


def validation_details(
    exc: RequestValidationError,
    openapi: dict[str, Any] | None = None,
    path: str = "",
    method: str = "",
    content_type: str | None = None,
) -> list[dict[str, Any]]:
    """One {field, message} per error. With the OpenAPI document and the operation, bounds state the whole rule."""
    details = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            # FastAPI puts the character offset where a field name goes: the field is the body, the offset is news.
            offset = next((p for p in loc if isinstance(p, int)), None)
            reason = (err.get("ctx") or {}).get("error", "")
            where = f" at character {offset}" if offset is not None else ""
            details.append({"field": "body", "message": f"is not valid JSON{where}{f' ({reason})' if reason else ''}"})
            continue
        if err.get("type") == "exactly_one":  # a rule over two fields (schemas._exactly_one): named by the first
            details.append({"field": err["ctx"]["field"], "message": str(err["msg"])})
            continue
        schema = field_schema(openapi, path, method, loc) if openapi else None
        details.append({"field": _field_name(loc), "message": _message(err, schema, content_type)})
    return details
