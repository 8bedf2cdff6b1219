"""SDXL_MAX_LARGE_BODIES: requests with large bodies are bounded in number; small ones never wait for them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import assert_error

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def one_slot(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = tiny_settings(model_cache, tmp_path_factory.mktemp("images"), max_large_bodies=1, queue_timeout_s=1)
    live = start_server(settings)
    yield live
    live.stop()


def _held_upload(server: LiveServer, release: threading.Event, sent: threading.Event) -> threading.Thread:
    """An /img2img whose chunked body stays incomplete until `release`: it holds the one slot meanwhile."""

    def body() -> Iterator[bytes]:
        yield b'{"prompt": "x", "strength": 0.5, "image": "'
        sent.set()
        release.wait(30)
        yield b'AAAA"}'

    def run() -> None:
        with server.client() as c:
            c.post("/img2img", content=body(), headers={"Content-Type": "application/json"})

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_large_body_waits_for_a_slot_then_is_refused_503(one_slot: LiveServer) -> None:
    release, sent = threading.Event(), threading.Event()
    holder = _held_upload(one_slot, release, sent)
    try:
        assert sent.wait(10)
        with one_slot.client() as c:
            large = {"prompt": "x", "strength": 0.5, "image": "A" * (2 * MIB)}
            r = c.post("/img2img", json=large)
            error = assert_error(r, 503, "busy")
            assert "SDXL_MAX_LARGE_BODIES" in error["message"] and r.headers["Retry-After"]
            # A small body never waits behind the large ones.
            small = c.post("/generate", json={"prompt": "x", "num_inference_steps": 1, "seed": 1})
            assert small.status_code == 200, small.text
    finally:
        release.set()
        holder.join(30)
    with one_slot.client() as c:  # the slot is back
        r = c.post("/img2img", json=large)
        assert_error(r, 422, "invalid_request", "image")  # judged as an image now (not one), not refused as busy
