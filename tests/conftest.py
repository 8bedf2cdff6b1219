"""Shared fixtures: the tiny model built once per session, and real uvicorn servers on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from app.config import Settings
from app.engine.models.tiny.build import ensure_tiny_models
from app.main import create_app
from app.server.config import server_config
from app.server.graceful import GracefulServer
from tests.s3_server import s3_server  # noqa: F401 - the session's real S3 server (SeaweedFS), for any test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("model-cache")
    ensure_tiny_models(cache)
    return cache


@dataclass
class LiveServer:
    """A real uvicorn server running `create_app(settings)` in a thread, bound to 127.0.0.1."""

    settings: Settings
    url: str
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def service(self) -> Any:
        return self.app.state.service

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def start_server(settings: Settings, wait_ready: bool = True, ready_within_s: float = 60) -> LiveServer:
    app = create_app(settings)
    port = free_port()
    config = server_config(app, settings, host="127.0.0.1", port=port, lifespan="on")
    server = GracefulServer(config)
    # run(), as the CLI serves: the loop its config names.
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    live = LiveServer(settings, f"http://127.0.0.1:{port}", app, server, thread)
    deadline = time.monotonic() + ready_within_s
    while time.monotonic() < deadline:
        try:
            status = httpx.get(f"{live.url}/ready", timeout=2).status_code
            if status == 200 or (not wait_ready and server.started):
                return live
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    live.stop()
    raise RuntimeError("test server did not become ready")


def tiny_settings(model_cache: Path, image_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"model": "tiny", "cache_dir": model_cache, "image_dir": image_dir, **overrides}
    return Settings(**values)


@pytest.fixture(scope="module")
def server(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tiny_settings(model_cache, tmp_path_factory.mktemp("images")))
    yield live
    live.stop()


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
