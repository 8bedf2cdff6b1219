"""API-key auth as ASGI middleware: deny by default, with a short allow-list of public paths.

Being middleware (not a per-route dependency) means every route, /docs and unknown paths included, is
covered without anyone remembering to add it. The key is accepted as `Authorization: <key>`,
`Authorization: Bearer <key>` or `X-API-Key: <key>` — the last lets dstack's own token travel in
`Authorization` at the same time. Keys are compared in constant time.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import render_error, route_path

PUBLIC_PATHS = frozenset({"/health", "/ready"})


def _candidates(headers: Headers) -> list[str]:
    found = []
    if api_key := headers.get("x-api-key"):
        found.append(api_key.strip())
    if authorization := headers.get("authorization"):
        authorization = authorization.strip()
        scheme, _, rest = authorization.partition(" ")
        found.append(rest.strip() if scheme.lower() == "bearer" else authorization)
    return found


def key_matches(presented: list[str], keys: tuple[str, ...]) -> bool:
    matched = False
    for candidate in presented:
        for key in keys:
            # No early exit: every comparison runs, so timing does not tell which key came close.
            matched |= hmac.compare_digest(candidate.encode(), key.encode())
    return matched


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: tuple[str, ...]):
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or route_path(scope) in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        if key_matches(_candidates(Headers(scope=scope)), self.keys):
            await self.app(scope, receive, send)
            return
        response = render_error(
            route_path(scope),
            401,
            "unauthorized",
            "missing or invalid API key: send Authorization, Bearer or X-API-Key",
            headers={"WWW-Authenticate": 'Bearer realm="sdxl-serve"'},
        )
        await response(scope, receive, send)
