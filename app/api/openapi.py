"""The OpenAPI document, with the API key the auth middleware enforces declared in it, and runnable examples.

Auth is middleware (see auth.py), which FastAPI cannot see; without this, /docs and generated clients would not
know a key is needed. Declared only when a key is configured, so the document says what this server does. Likewise
the examples of the nested LoRA and ControlNet references name entries of the served model's family.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.middleware.auth import PUBLIC_PATHS
from app.schema_examples import NESTED

SCHEMES = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "The same key, as `Authorization: Bearer <key>`"},
}


def document_auth(app: FastAPI, enabled: bool, family: str = "sdxl") -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            components = schema.get("components", {}).get("schemas", {})
            for name, example in NESTED.get(family, {}).items():
                if name in components:
                    components[name]["examples"] = [example]
            if enabled:
                schema.setdefault("components", {})["securitySchemes"] = SCHEMES
                schema["security"] = [{name: []} for name in SCHEMES]  # either one
                for path in PUBLIC_PATHS:
                    for operation in schema["paths"].get(path, {}).values():
                        operation["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
