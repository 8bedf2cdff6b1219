"""Deny by default, proven by walking the app's routes, and no header, path or root_path trick gets past it."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from app.server.config import server_config
from app.server.graceful import GracefulServer
from tests.conftest import LiveServer, free_port, start_server, tiny_settings
from tests.helpers import assert_error

KEY = "k"
# /docs, its files and /openapi.json are public by default (SDXL_DOCS=public; tests/e2e/api/test_docs.py covers
# SDXL_DOCS=protected); everything else needs the key. Restated, not imported: the test is the specification.
DOCS = {"/docs", "/openapi.json"} | {
    f"/docs/assets/{name}" for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png", "swagger-init.js")
}
# The playground (/ui, and / leading there) and its files hold no data: public to GET (any other method needs the
# key: tests/e2e/api/test_ui.py); what they show needs the key.
UI = {"/", "/ui"} | {f"/ui/assets/{name}" for name in ("ui.js", "ui.css", "icon.svg")}
PUBLIC = {"/health", "/ready"} | DOCS | UI
# Routes that exist today; the walk must find at least these, so a broken walk cannot pass by finding nothing.
KNOWN = {"/generate", "/refine", "/download/{id}", "/images/{id}", "/jobs/{id}", "/jobs/{id}/events", "/metrics"}
KNOWN |= {"/sdapi/v1/txt2img", "/sdapi/v1/options", "/sdapi/v1/progress"}
ANY_ID = "0" * 32


def _walk(app: Any) -> list[tuple[str, str]]:
    """(method, path template) for every HTTP route, through included routers however FastAPI stores them."""
    try:  # FastAPI >= 0.13x includes routers lazily; this flattens them.
        from fastapi.routing import iter_route_contexts

        routes: list[Any] = list(iter_route_contexts(app.routes))
    except ImportError:
        routes = list(app.routes)
    found = []
    for route in routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        assert path is not None and methods, f"a route the walk cannot read: {route!r}"
        found += [(method, path) for method in sorted(methods)]
    return found


@pytest.fixture(scope="module")
def secured(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tiny_settings(model_cache, tmp_path_factory.mktemp("img"), generation_auth_key=KEY))
    yield live
    live.stop()


def test_every_non_public_route_refuses_without_a_key(secured: LiveServer) -> None:
    routes = _walk(secured.app)
    covered = {path for _, path in routes if path not in PUBLIC}
    assert covered >= KNOWN, f"the walk missed {KNOWN - covered}"
    with secured.client() as c:
        for method, template in routes:
            if template in PUBLIC:
                continue
            path = re.sub(r"\{[^}]+\}", ANY_ID, template)
            r = c.request(method, path, json={"prompt": "x"} if method in ("POST", "PUT", "PATCH") else None)
            assert r.status_code == 401, (method, path, r.text)
            if method == "HEAD":  # no body to check the shape of
                continue
            if path.startswith("/v1/"):  # the OpenAI-compatible routes answer in OpenAI's error shape
                error = r.json()["error"]
                assert set(error) == {"message", "type", "param", "code"}, error
                assert error["code"] == "unauthorized", error
            elif path.startswith("/sdapi/"):  # the A1111 routes answer in A1111's, with a Basic challenge
                body = r.json()
                assert set(body) == {"error", "detail", "field", "errors"} and body["error"] == "unauthorized", body
                assert r.headers["www-authenticate"].startswith("Basic "), r.headers
            else:
                assert_error(r, 401, "unauthorized")


def test_the_public_list_is_exactly_health_ready_the_docs_and_the_ui(secured: LiveServer) -> None:
    walked = {path for _, path in _walk(secured.app)}
    assert walked >= PUBLIC, f"public paths that are not routes: {PUBLIC - walked}"
    with secured.client() as c:
        for path in PUBLIC:
            assert c.get(path).status_code == (307 if path == "/" else 200), path  # / redirects to ui
        for path in PUBLIC - DOCS:  # what monitors and link checkers probe answers HEAD too, with no body
            r = c.head(path)
            assert (r.status_code, r.content) == ((307 if path == "/" else 200), b""), path
            assert int(r.headers["content-length"]) == len(c.get(path).content), path


def _raw(url: str, request_target: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
    """Send one request with an exact request-target (no client-side normalisation) and return status, body."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    lines = [f"POST {request_target} HTTP/1.1"]
    if not any(k.lower() == "host" for k in headers):
        lines.append(f"Host: {parts.hostname}:{parts.port}")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += ["Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close", "", ""]
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        s.sendall("\r\n".join(lines).encode() + body)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    status = int(response.split(b" ", 2)[1])
    return status, response.partition(b"\r\n\r\n")[2]


BODY = b'{"prompt": "x", "seed": 1}'


@pytest.mark.parametrize(
    ("target", "headers", "status"),
    [
        ("/generate", {"Host": "localhost"}, 401),
        ("/generate", {"Host": "127.0.0.1:1"}, 401),
        ("/generate", {"X-Forwarded-Prefix": "/health"}, 401),
        ("/generate", {"X-Original-URL": "/health"}, 401),
        ("/generate", {"X-Rewrite-URL": "/health"}, 401),
        ("/generate", {"X-Forwarded-Host": "localhost", "X-Forwarded-Proto": "https"}, 401),
        ("/health/..%2Fgenerate", {}, 401),
        ("/health/%2E%2E/generate", {}, 401),
        ("/health%2F..%2Fgenerate", {}, 401),
        ("/ready/../generate", {}, 401),
        ("http://127.0.0.1/generate", {}, 401),
        # The query string is not part of the path: this is POST /health, which only answers GET.
        ("/health?x=/generate", {}, 405),
    ],
)
def test_tricks_do_not_reach_a_protected_route(
    secured: LiveServer, target: str, headers: dict[str, str], status: int
) -> None:
    got, body = _raw(secured.url, target, headers, BODY)
    assert got == status, body
    assert b'"id"' not in body


def _start_under_root_path(
    app: Any, settings: Settings, root_path: str
) -> tuple[str, GracefulServer, threading.Thread]:
    port = free_port()
    config = server_config(app, settings, host="127.0.0.1", port=port, lifespan="on", root_path=root_path)
    server = GracefulServer(config)
    # run(), as the CLI serves: the loop its config names.
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return url, server, thread
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.should_exit = True
    raise AssertionError("root_path server did not become ready")


def test_root_path_does_not_open_a_way_around_auth(model_cache: Path, tmp_path: Path) -> None:
    settings = tiny_settings(model_cache, tmp_path, generation_auth_key=KEY)
    url, server, thread = _start_under_root_path(create_app(settings), settings, "/api")
    try:
        # uvicorn's root_path is the prefix a proxy already stripped: it is prepended to the path the app sees.
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        for target in [
            "/api/generate",
            "/generate",
            "/api/api/generate",
            "/api/health/../generate",
            "/api/health/..%2Fgenerate",
            "/health/..%2Fgenerate",
            "/api/health",
            "/apihealth",
            "/api/api/health",
        ]:
            got, body = _raw(url, target, {}, BODY)
            assert got == 401, (target, body)
        # Sanity: with the key the same route works, so the 401s above were auth, not routing.
        ok = httpx.post(f"{url}/generate", json={"prompt": "x", "seed": 1}, headers={"X-API-Key": KEY}, timeout=60)
        assert ok.status_code == 200, ok.text
    finally:
        server.should_exit = True
        thread.join(30)
