"""Webhooks against a real receiver on 127.0.0.1: payload shape, signatures, retries, and never blocking."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.events.node_info import NodeInfo
from app.events.webhooks import DeliveryPolicy, WebhookSink, verify_signature
from tests.conftest import free_port, start_server, tiny_settings
from tests.e2e.events.receiver import Receiver

SECRET = "s"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def _sink(url: str, tmp_path: Path, **policy: float) -> WebhookSink:
    node_info = NodeInfo("test-node", None, tmp_path)
    return WebhookSink({"image.generated": url}, node_info, policy=DeliveryPolicy(**policy))  # type: ignore[arg-type]


# --- end to end: a real server of our app --------------------------------------------------------
def test_every_event_reaches_its_url_signed_in_igi_shape(model_cache: Path, tmp_path: Path, receiver: Receiver) -> None:
    settings = tiny_settings(
        model_cache,
        tmp_path,
        webhook_model_loaded=receiver.url("/loaded"),
        webhook_model_unloaded=receiver.url("/unloaded"),
        webhook_image_generated=receiver.url("/generated"),
        webhook_image_stored=receiver.url("/stored?token=t"),
        webhook_secret=SECRET,
        webhook_post_image=True,
    )
    live = start_server(settings)
    try:
        loaded = receiver.wait_for("model.loaded")[0]
        with live.client() as client:
            response = client.post("/generate", json={"prompt": "x", "seed": 1})
            assert response.status_code == 200, response.text
            image_id = response.json()["id"]
            png = client.get(f"/download/{image_id}").content
        generated = receiver.wait_for("image.generated")[0]
        stored = receiver.wait_for("image.stored")[0]
    finally:
        live.stop()
    unloaded = receiver.events("model.unloaded")  # close() flushed it before the server stopped
    assert len(unloaded) == 1

    paths = {r.path for r in (loaded, unloaded[0], generated, stored)}
    assert paths == {"/loaded", "/unloaded", "/generated", "/stored?token=t"}
    assert loaded.json()["model"] == "tiny" and loaded.json()["role"] == "model"
    assert generated.json()["seed"] == 1 and generated.json()["job_id"] == response.json()["job_id"]
    body = stored.json()
    assert body["image_id"] == image_id and body["url"] == f"/download/{image_id}"
    assert base64.b64decode(body["image"]) == png

    for request in receiver.requests:
        payload = request.json()
        assert request.headers["content-type"] == "application/json"
        assert request.headers["x-sdxl-event"] == payload["event"]
        assert request.headers["x-sdxl-delivery"] == payload["id"] and len(payload["id"]) == 32
        assert abs(payload["timestamp"] - time.time()) < 120
        node_info = payload["node_info"]
        assert node_info["identity"] == {"node_id": socket.gethostname(), "node_group": None}
        stats = node_info["system_stats"]
        assert set(stats) == {"cpu", "memory", "storage", "gpu", "packages"}
        assert stats["packages"]["diffusers"] and stats["packages"]["torch"]
        assert stats["memory"]["total"] > 0 and stats["storage"]["free"] > 0
        timestamp, signature = request.headers["x-sdxl-timestamp"], request.headers["x-sdxl-signature"]
        assert verify_signature(SECRET, timestamp, request.body, signature)
        assert not verify_signature(SECRET, timestamp, request.body.replace(b'"event"', b'"Event"'), signature)
        assert not verify_signature(SECRET, timestamp, request.body + b" ", signature)


def test_a_slow_receiver_never_slows_generation(model_cache: Path, tmp_path: Path) -> None:
    receiver = Receiver(delay_s=5.0)  # beyond the client's 5 s timeout: every attempt hangs, then times out
    settings = tiny_settings(
        model_cache,
        tmp_path,
        webhook_model_loaded=receiver.url("/loaded"),
        webhook_image_generated=receiver.url("/generated"),
        webhook_image_stored=receiver.url("/stored"),
    )
    live = start_server(settings)
    try:
        overheads = []
        with live.client() as client:
            for seed in range(3):
                started = time.perf_counter()
                response = client.post("/generate", json={"prompt": "x", "seed": seed})
                assert response.status_code == 200, response.text
                took = time.perf_counter() - started
                overheads.append(took - response.json()["timings"]["inference_ms"] / 1000)
        receiver.wait_for("image.stored")  # deliveries were under way (and stuck) while /generate answered
        # Time outside the pipeline call (queue, encode, store, HTTP): ~0.1 s; waiting on a delivery would add
        # 5 s or more. Compared to the inference time, so CPU contention from other tests does not matter.
        assert max(overheads) < 2.5, overheads
    finally:
        receiver.release.set()  # the stuck handlers answer now, so close() flushes quickly
        live.stop()
        receiver.stop()


# --- delivery ------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [500, 503, 429])
async def test_a_failed_delivery_is_retried_with_the_same_delivery_id(tmp_path: Path, status: int) -> None:
    receiver = Receiver(fail_first=2, fail_status=status)
    try:
        sink = _sink(receiver.url("/g"), tmp_path)
        await sink.start()
        started = time.monotonic()
        sink.emit("image.generated", {"seed": 7})
        await sink.close()
        elapsed = time.monotonic() - started
    finally:
        receiver.stop()
    assert [r.status for r in receiver.requests] == [status, status, 200]
    assert len({r.headers["x-sdxl-delivery"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1
    assert elapsed >= 0.2 + 0.4  # backed off between attempts


async def test_a_4xx_answer_is_not_retried(tmp_path: Path) -> None:
    receiver = Receiver(fail_first=5, fail_status=404)
    try:
        sink = _sink(receiver.url("/g"), tmp_path)
        await sink.start()
        sink.emit("image.generated", {"seed": 7})
        await sink.close()
    finally:
        receiver.stop()
    assert [r.status for r in receiver.requests] == [404]


async def test_a_trickling_receiver_is_cut_off_at_the_deadline_of_each_attempt(tmp_path: Path) -> None:
    """A byte every 0.1 s keeps every read within httpx's timeout; each attempt still ends at timeout_s, and the
    next deliveries get their turn."""
    receiver = Receiver(trickle_s=0.1)
    try:
        sink = _sink(receiver.url("/g"), tmp_path, timeout_s=0.5, max_attempts=2, base_delay_s=0.05)
        await sink.start()
        started = time.monotonic()
        sink.emit("image.generated", {"seed": 1})
        sink.emit("image.generated", {"seed": 2})
        await _until(lambda: len(receiver.requests) == 4)
        elapsed = time.monotonic() - started
        await sink.close()
    finally:
        receiver.stop()
    assert sorted(r.json()["seed"] for r in receiver.requests) == [1, 1, 2, 2]  # two attempts each
    assert elapsed < 4 * 0.5 + 1.5, elapsed  # four attempts of 0.5 s, the backoffs and some slack


async def test_close_gives_up_on_an_unreachable_receiver_within_its_bound(tmp_path: Path) -> None:
    sink = _sink(f"http://127.0.0.1:{free_port()}/", tmp_path, max_attempts=1000, base_delay_s=0.05, close_timeout_s=1)
    await sink.start()
    sink.emit("image.generated", {"seed": 7})
    started = time.monotonic()
    await sink.close()
    assert time.monotonic() - started < 4


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_emit_drops_instead_of_blocking_or_raising(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    sink = _sink(receiver.url("/g"), tmp_path, queue_size=1, workers_per_event=1)
    await sink.start()
    for seed in range(5):  # the worker has not run yet: one fits, four are dropped
        sink.emit("image.generated", {"seed": seed})
    sink.emit("model.loaded", {"model": "tiny"})  # no URL for this event: ignored
    assert sink.dropped == 4
    await _until(lambda: len(receiver.requests) == 1)
    thread = threading.Thread(target=sink.emit, args=("image.generated", {"seed": 99}))
    thread.start()  # emit from another thread goes through the loop
    thread.join()
    await _until(lambda: len(receiver.requests) == 2)
    circular: dict[str, object] = {}
    circular["self"] = circular
    sink.emit("image.generated", {"data": circular})  # cannot become JSON: its delivery fails, quietly
    await sink.close()
    assert [r.json()["seed"] for r in receiver.requests] == [0, 99]
    assert "delivering image.generated" in caplog.text
    sink.emit("image.generated", {"seed": 100})  # after close: dropped, no error
    assert sink.dropped == 5


def test_webhook_urls_are_checked_at_startup(tmp_path: Path) -> None:
    for url in ("ftp://example.invalid/hook?token=secret-token", "not a url", "http:///path-only"):
        with pytest.raises(ValidationError) as error:
            Settings(model="tiny", image_dir=tmp_path, webhook_image_stored=url)
        message = error.value.errors()[0]["msg"]
        assert "WEBHOOK_IMAGE_STORED must be an http:// or https:// URL with a host" in message
        assert "secret-token" not in message
        unchecked = Settings.model_construct(webhook_image_stored=url)
        with pytest.raises(ValueError, match="WEBHOOK_IMAGE_STORED must be an http"):
            WebhookSink.from_settings(unchecked)
    assert Settings(model="tiny", webhook_image_stored="").webhook_image_stored is None  # set but empty: unset


def test_the_cli_refuses_a_bad_webhook_url_without_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDXL_", "WEBHOOK_"))}
    env.update(SDXL_MODEL="tiny", IMAGE_DIR=str(tmp_path), WEBHOOK_MODEL_LOADED="localhost:9000/hook")
    proc = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "WEBHOOK_MODEL_LOADED must be an http:// or https:// URL with a host" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- signatures ----------------------------------------------------------------------------------
def _signed(secret: str, timestamp: int, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def test_verify_signature() -> None:
    body, now = b'{"event":"image.stored"}', int(time.time())
    assert verify_signature("k", str(now), body, _signed("k", now, body))
    assert verify_signature(b"k", now, body, _signed("k", now, body))
    assert not verify_signature("other", str(now), body, _signed("k", now, body))  # wrong secret
    assert not verify_signature("k", str(now), body + b"x", _signed("k", now, body))  # tampered body
    assert not verify_signature("k", str(now - 301), body, _signed("k", now - 301, body))  # stale
    assert not verify_signature("k", str(now + 301), body, _signed("k", now + 301, body))  # from the future
    assert verify_signature("k", str(now - 301), body, _signed("k", now - 301, body), tolerance_s=600)
    assert not verify_signature("k", str(now), body, _signed("k", now, body).removeprefix("sha256="))
    assert not verify_signature("k", "soon", body, _signed("k", now, body))
    assert not verify_signature("k", str(now), body, "sha256=é")
