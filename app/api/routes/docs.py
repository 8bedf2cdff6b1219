"""/docs: Swagger UI served by the service itself, so that it works offline and under a strict CSP.

FastAPI's own /docs page loads Swagger UI from a CDN and starts it with an inline <script>: offline the page is
blank, and a Content-Security-Policy that allows only the service itself would block the inline script. Here the
files come from the `fastapi-offline` package (Swagger UI's dist files, refreshed with its releases; only the files
are used) and the start-up code is one more static script, which reads the schema's URL from the page. So the page
holds no inline code and its policy is one constant string; a CSP hash of an inline script would have to be kept in
step with every edit of the script, and would tie the script's text to the policy's.

There is no /redoc: Swagger UI reads the same schema and also has "Try it out" and the Authorize button, and ReDoc
would be a second megabyte of JavaScript to keep current (its styles are injected inline, which `style-src 'self'`
refuses).
"""

from __future__ import annotations

from functools import cache
from html import escape
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

DOCS_PATH = "/docs"
OPENAPI_PATH = "/openapi.json"
ASSETS_PREFIX = "/docs/assets/"

# Only what the page references, from the installed package; read once, on first use (1.7 MB).
_DIST = files("fastapi_offline") / "static"
_FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
INIT_JS = """\
// Starts Swagger UI on /docs. A file rather than an inline script: the page's CSP runs scripts from the service only.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,  // the default sends the schema to an outside validator
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
});
"""
ASSETS = (*_FILES, "swagger-init.js")
# Exact paths, no prefix rule: the auth middleware may let exactly these through (SDXL_DOCS=public).
PATHS = frozenset({DOCS_PATH, OPENAPI_PATH, *(ASSETS_PREFIX + name for name in ASSETS)})

# Everything from the service itself; data: images are the icons inside swagger-ui.css.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API docs</title>
<link rel="stylesheet" href="{assets}swagger-ui.css">
<link rel="icon" type="image/png" href="{assets}favicon.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{assets}swagger-ui-bundle.js"></script>
<script src="{assets}swagger-init.js"></script>
</body>
</html>
"""
_CACHE = {"Cache-Control": "public, max-age=3600"}

router = APIRouter(include_in_schema=False)


@router.get(DOCS_PATH)
async def swagger_ui(request: Request) -> HTMLResponse:
    # Relative references: they resolve under whatever prefix a proxy serves the page at (dstack's
    # /proxy/services/<project>/<run>/ strips its prefix before we see the request, so no root_path names it).
    page = _PAGE.format(
        title=escape(request.app.title), assets=ASSETS_PREFIX.lstrip("/"), openapi=OPENAPI_PATH.lstrip("/")
    )
    return HTMLResponse(page, headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})


@router.get(ASSETS_PREFIX + "swagger-init.js")
async def swagger_init() -> Response:
    return Response(INIT_JS, media_type="text/javascript; charset=utf-8", headers=_asset_headers())


@cache
def _read(name: str) -> bytes:
    return (_DIST / name).read_bytes()


def _asset_route(name: str, media_type: str) -> Any:
    async def asset() -> Response:
        return Response(_read(name), media_type=media_type, headers=_asset_headers())

    asset.__name__ = f"asset_{name.replace('-', '_').replace('.', '_')}"
    return asset


def _asset_headers() -> dict[str, str]:
    return {**_CACHE, "X-Content-Type-Options": "nosniff"}


for _name, _type in _FILES.items():
    router.add_api_route(ASSETS_PREFIX + _name, _asset_route(_name, _type), methods=["GET"])
