"""/ui: the playground and gallery, plain files served by the service (no build step, nothing from elsewhere).

The page holds no data: it is the same for every deployment of a version, like /docs, so it and its two files are
public, and everything it shows comes from the API, called with the key the page asks for once and keeps in the tab's
sessionStorage. Its policy allows the service itself only; the script renders every prompt and id as text
(textContent), never as markup, and images arrive as blob: URLs because an <img> cannot send the key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

UI_PATH = "/ui"
ASSETS_PREFIX = "/ui/assets/"

_ROOM = files("app") / "static" / "ui"
# The icon too: without one a browser asks for /favicon.ico, which needs the key.
_ASSETS = {"ui.js": "text/javascript; charset=utf-8", "ui.css": "text/css; charset=utf-8", "icon.svg": "image/svg+xml"}
# Exact paths, no prefix rule: the auth middleware lets exactly these through.
PATHS = frozenset({"/", UI_PATH, *(ASSETS_PREFIX + name for name in _ASSETS)})

# blob: images are PNGs the script fetched with the key; connect-src 'self' is where every call goes.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

router = APIRouter(include_in_schema=False)


@cache
def _read(name: str) -> bytes:
    return (_ROOM / name).read_bytes()


@router.api_route("/", methods=["GET", "HEAD"])  # HEAD as a static file server answers it
async def root() -> RedirectResponse:
    # Relative, so that behind a proxy prefix /prefix/ leads to /prefix/ui.
    return RedirectResponse(UI_PATH.lstrip("/"), status_code=307)


@router.api_route(UI_PATH, methods=["GET", "HEAD"])
async def page() -> Response:
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers=_HEADERS)


def _asset_route(name: str, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def asset() -> Response:
        return Response(_read(name), media_type=media_type, headers={**_HEADERS, "Cache-Control": "no-cache"})

    asset.__name__ = f"ui_{name.replace('.', '_')}"
    return asset


for _name, _type in _ASSETS.items():
    router.add_api_route(ASSETS_PREFIX + _name, _asset_route(_name, _type), methods=["GET", "HEAD"])
