"""API-key auth as ASGI middleware: deny by default, with a short allow-list of public paths.

Being middleware (not a per-route dependency) means every route, /docs and unknown paths included, is
covered without anyone remembering to add it. The key is accepted as `Authorization: <key>`,
`Authorization: Bearer <key>`, `X-API-Key: <key>` — the last lets dstack's own token travel in
`Authorization` at the same time — or as the password of HTTP Basic (`Authorization: Basic`, any user name), which
is how AUTOMATIC1111's `--api-auth` clients send it. Keys are compared in constant time.

/docs, its files and /openapi.json are public by default (SDXL_DOCS=public): they describe the API, the same for
every deployment of a version, and hold no secret (vLLM serves them publicly too); a browser could not reach the
Authorize button otherwise, since it cannot send a header to open the page. With SDXL_DOCS=protected they need the key
like everything else, and their 401 asks for it as a Basic password, which a browser prompts for and then sends with
the page's own requests.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import A1111_PREFIX, render_error, route_path
from app.api.routes import docs, ui

PUBLIC_PATHS = frozenset({"/health", "/ready"})
# The playground's page and files hold no data (app/api/routes/ui.py): public to read, and only to read; what the page
# shows comes from the API, with the key.
READ_ONLY_PATHS = ui.PATHS
_READ = frozenset({"GET", "HEAD"})


def _candidates(headers: Headers) -> list[str]:
    found = []
    if api_key := headers.get("x-api-key"):
        found.append(api_key.strip())
    if authorization := headers.get("authorization"):
        authorization = authorization.strip()
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() == "basic":
            found.extend(_basic_password(rest.strip()))
        else:
            found.append(rest.strip() if scheme.lower() == "bearer" else authorization)
    return found


def _basic_password(credentials: str) -> list[str]:
    try:
        _, colon, password = base64.b64decode(credentials, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return []
    return [password] if colon else []


def key_matches(presented: list[str], keys: tuple[str, ...]) -> bool:
    matched = False
    for candidate in presented:
        for key in keys:
            # No early exit: every comparison runs, so timing does not tell which key came close.
            matched |= hmac.compare_digest(candidate.encode(), key.encode())
    return matched


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: tuple[str, ...], public_docs: bool = True):
        self.app = app
        self.keys = keys
        self.public = PUBLIC_PATHS | docs.PATHS if public_docs else PUBLIC_PATHS

    def _public(self, scope: Scope) -> bool:
        path = route_path(scope)
        return path in self.public or (path in READ_ONLY_PATHS and scope["method"] in _READ)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or self._public(scope):
            await self.app(scope, receive, send)
            return
        if key_matches(_candidates(Headers(scope=scope)), self.keys):
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        # A1111 clients and browsers (the docs) answer a Basic challenge; everyone else is told about the Bearer key.
        scheme = "Basic" if path.startswith(A1111_PREFIX) or path in docs.PATHS else "Bearer"
        response = render_error(
            path,
            401,
            "unauthorized",
            "missing or invalid API key: send Authorization, Bearer, X-API-Key or Basic with the key as password",
            headers={"WWW-Authenticate": f'{scheme} realm="sdxl-serve"'},
        )
        await response(scope, receive, send)
