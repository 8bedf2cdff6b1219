"""/docs works offline: every file it needs comes from the service, under a CSP that allows only the service, and
with a key configured it is public by default (SDXL_DOCS=protected: behind the key; off: not served) (issue 15)."""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from app.api.routes import docs
from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import assert_error

KEY = "docs-key"
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture(scope="module")
def secured(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tiny_settings(model_cache, tmp_path_factory.mktemp("img"), generation_auth_key=KEY))
    yield live
    live.stop()


def _references(page: str) -> list[str]:
    return re.findall(r'(?:src|href|data-openapi-url)="([^"]*)"', page)


def test_the_page_and_its_files_come_from_the_service(secured: LiveServer) -> None:
    with secured.client() as c:  # no key: the docs are public by default
        r = c.get("/docs")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self';" in csp and "style-src 'self';" in csp
        assert "unsafe-inline" not in csp and "http" not in csp
        assert "<script>" not in r.text and "style=" not in r.text  # nothing inline for the CSP to refuse
        refs = _references(r.text)
        assert len(refs) == 5, refs  # css, favicon, the schema, Swagger UI's bundle, its start-up script
        for ref in refs:
            assert not urlsplit(ref).scheme and not urlsplit(ref).netloc, ref  # the service itself, no other host
            asset = c.get(urljoin(f"{secured.url}/docs", ref))
            assert asset.status_code == 200, (ref, asset.text[:200])
            expected = "application/json" if ref == "openapi.json" else TYPES[Path(ref).suffix]
            assert asset.headers["content-type"].startswith(expected), (ref, asset.headers)
        assert c.get("/docs/assets/swagger-init.js").text.count("SwaggerUIBundle(") == 1
        assert c.get("/redoc").status_code == 401  # gone (ReDoc needs inline styles): an unknown path, still keyed
        assert c.post("/generate", json={"prompt": "x"}).status_code == 401  # the rest still needs the key


def test_the_references_resolve_under_a_proxy_prefix(secured: LiveServer) -> None:
    # Relative, so that a page served at https://host/proxy/services/main/sdxl-serve/docs (dstack without a gateway,
    # which strips the prefix before the service sees the request) loads its files from under the same prefix.
    refs = _references(httpx.get(f"{secured.url}/docs").text)
    for ref in refs:
        assert urljoin("https://host/prefix/docs", ref).startswith("https://host/prefix/"), ref


@pytest.fixture(scope="module")
def protected(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = tiny_settings(model_cache, tmp_path_factory.mktemp("img"), generation_auth_key=KEY, docs="protected")
    live = start_server(settings)
    yield live
    live.stop()


def test_protected_docs_ask_a_browser_for_the_key(protected: LiveServer) -> None:
    basic = "Basic " + base64.b64encode(f"any:{KEY}".encode()).decode()
    with protected.client() as c:
        for path in sorted(docs.PATHS):
            r = c.get(path)
            assert_error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Basic "), path  # a browser prompts for it
            assert c.get(path, headers={"Authorization": basic}).status_code == 200, path
            assert c.get(path, headers={"X-API-Key": KEY}).status_code == 200, path


def test_docs_off_serves_neither_page_nor_schema(model_cache: Path, tmp_path: Path) -> None:
    live = start_server(tiny_settings(model_cache, tmp_path, docs="off"))
    try:
        with live.client() as c:
            for path in sorted(docs.PATHS):
                assert_error(c.get(path), 404, "not_found")
            assert c.get("/health").status_code == 200
    finally:
        live.stop()


CHROMIUM = shutil.which("chromium")
# CI (.ci/run) installs chromium and sets this, so that there the page test can never quietly skip.
NEED_BROWSER = os.environ.get("SDXL_REQUIRE_BROWSER") == "1"


@pytest.mark.skipif(CHROMIUM is None and not NEED_BROWSER, reason="no system chromium (apt-get install chromium)")
def test_swagger_ui_renders_every_operation_offline_in_a_browser(secured: LiveServer) -> None:
    from playwright.sync_api import sync_playwright

    schema = httpx.get(f"{secured.url}/openapi.json").json()
    operations = sum(len(methods) for methods in schema["paths"].values())
    with sync_playwright() as p:
        # The resolver rule: the page can reach nothing but loopback, as on a machine without a network.
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
        )
        try:
            page = browser.new_page()
            console: list[str] = []
            requested: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("request", lambda r: requested.append(r.url))
            page.goto(f"{secured.url}/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            assert page.locator(".opblock").count() == operations
            assert page.locator("button.authorize").count() == 1  # the key is declared: Authorize is there
        finally:
            browser.close()
    assert not [m for m in console if "Content Security Policy" in m or m.startswith("error")], console
    assert requested and all(url.startswith(secured.url + "/") for url in requested), requested
