"""A declared card (SDXL_GPU_MEMORY_GB) on the CPU with the tiny model: admission, batch caps, tiling, swap mode.

0.02 GiB (21.5 MB) is to the tiny model what a 12 GB card is to SDXL: the base (6 MB in fp32) and a default-size
call fit, the base, the refiner's UNet (5.3 MB) and a default-size call (10.7 MB of decode) do not. So the service
must choose swap mode, refuse at once what no call could hold, cap batches, and tile a decode that would not fit.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.engine.gpu import memory
from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import assert_error

CARD_GB = 0.02
FAST = {"num_inference_steps": 2, "seed": 1}


@pytest.fixture(scope="module")
def card(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = tiny_settings(model_cache, tmp_path_factory.mktemp("images"), gpu_memory_gb=CARD_GB, device="cpu")
    live = start_server(settings)
    yield live
    live.stop()


@pytest.fixture
def c(card: LiveServer) -> Iterator[httpx.Client]:
    with card.client() as client:
        yield client


def _batch_sizes(c: httpx.Client) -> dict[str, float]:
    """sdxl_batch_size histogram buckets, from /metrics."""
    out = {}
    for line in c.get("/metrics").text.splitlines():
        if line.startswith("sdxl_batch_size_bucket"):
            le = line.split('le="')[1].split('"')[0]
            out[le] = float(line.rsplit(" ", 1)[1])
    return out


def test_models_reports_the_declared_card_and_swap_mode(c: httpx.Client) -> None:
    mem = c.get("/models").json()["memory"]
    assert mem["budget_bytes"] == int(CARD_GB * memory.GiB)
    assert mem["mode"] == memory.SWAP, mem["reason"]
    assert "do not fit" in mem["reason"] and "refiner UNet" in mem["reason"]
    assert mem["base_bytes"] > 5_000_000
    assert mem["warmup"] is None  # not CUDA, not asked for


def test_a_size_no_call_can_hold_is_refused_at_once_naming_what_fits(card: LiveServer, c: httpx.Client) -> None:
    r = c.post("/generate", json={"prompt": "x", "width": 1024, "height": 1024, **FAST})
    body = assert_error(r, 422, "does_not_fit", "width")
    message = body["message"]
    assert "1024x1024" in message and "device has 20.5 MiB" in message, message
    side = int(body["details"][0]["message"].removeprefix("at most "))
    assert 256 < side < 1024 and side % 8 == 0 and f"at most {side}x{side}" in message, message
    assert card.service.scheduler.depth == 0  # nothing was queued or run for it
    # The size it names is accepted and served; one step larger is refused too.
    ok = c.post("/generate", json={"prompt": "x", "width": side, "height": side, **FAST})
    assert ok.status_code == 200, ok.text
    over = c.post("/generate", json={"prompt": "x", "width": side + 8, "height": side + 8, **FAST})
    assert_error(over, 422, "does_not_fit", "width")


def test_a_decode_that_would_not_fit_whole_is_tiled(card: LiveServer, c: httpx.Client) -> None:
    vae = card.service.runner.default_pipeline.vae
    mem, tiny = card.service.memory, memory.FOOTPRINTS["tiny"]
    call = memory.Call(384, 384, 1, True, mem.dtype_bytes, False)
    room = mem.budget - mem.base_bytes
    assert memory.decode_bytes(tiny, call, memory.Decode(sliced=False, tiled=False)) > room  # whole: no room
    r = c.post("/generate", json={"prompt": "x", "width": 384, "height": 384, **FAST})
    assert r.status_code == 200, r.text
    assert vae.use_tiling and vae.tile_sample_min_size == memory.FOOTPRINTS["tiny"].tile
    r = c.post("/generate", json={"prompt": "x", "width": 256, "height": 256, **FAST})
    assert r.status_code == 200, r.text
    assert not vae.use_tiling  # a decode that fits whole is not tiled (tiles can show seams)


def test_batches_never_hold_more_than_fit(card: LiveServer, c: httpx.Client) -> None:
    runner = card.service.runner
    fp = memory.FOOTPRINTS["tiny"]
    mem = card.service.memory
    call = memory.Call(320, 320, 1, True, mem.dtype_bytes, False)
    cap = memory.most_images(fp, call, mem.budget - mem.base_bytes, 8)
    assert 1 <= cap < 4, cap  # the declared card holds fewer than four 320x320 images per call
    before = _batch_sizes(c)
    r = c.post("/generate", json={"prompt": "x", "width": 320, "height": 320, "num_images": 4, **FAST})
    assert r.status_code == 200, r.text
    assert len(r.json()["images"]) == 4
    after = _batch_sizes(c)
    calls = after["+Inf"] - before["+Inf"]
    assert calls == -(-4 // cap)  # ceil(4 / cap) calls, none of them over the cap
    assert after[f"{float(cap)}"] - before[f"{float(cap)}"] == calls
    assert runner.resident_bytes() <= mem.budget


def test_swap_mode_serves_refine_and_ensemble_with_the_unets_taking_turns(
    card: LiveServer, c: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="app.engine.gpu.residency")
    runner = card.service.runner
    first = c.post("/generate", json={"prompt": "x", **FAST})
    assert first.status_code == 200, first.text
    assert runner.parking.parked <= {"refiner"}
    refined = c.post("/refine", json={"id": first.json()["id"], "prompt": "x", "seed": 1})
    assert refined.status_code == 200, refined.text
    assert runner.parking.parked == {"base"}  # the base's UNet made way for the refiner's
    assert runner.resident_bytes() <= card.service.memory.budget
    again = c.post("/generate", json={"prompt": "x", **FAST})
    assert again.status_code == 200, again.text
    assert runner.parking.parked == {"refiner"}  # and came back for the next generate
    ensemble = c.post(
        "/generate",
        json={"prompt": "x", "num_inference_steps": 4, "refine": {"mode": "ensemble", "high_noise_frac": 0.5}},
    )
    assert ensemble.status_code == 200, ensemble.text
    assert runner.parking.parked == {"base"}  # switched half-way through the call
    # Right after a refine (the refiner's UNet on the device, the base's parked) an ensemble must park the refiner's
    # for its first half, not run with both.
    refined = c.post("/refine", json={"id": first.json()["id"], "prompt": "x", "seed": 1})
    assert refined.status_code == 200, refined.text
    ensemble = c.post(
        "/generate",
        json={"prompt": "x", "num_inference_steps": 4, "refine": {"mode": "ensemble", "high_noise_frac": 0.5}},
    )
    assert ensemble.status_code == 200, ensemble.text
    over = [r.getMessage() for r in caplog.records if "may run out of memory" in r.getMessage()]
    assert not over, over  # no call ever ran over the budget


def test_a_second_model_that_cannot_fit_beside_the_pinned_default_is_refused(c: httpx.Client) -> None:
    r = c.post("/generate", json={"prompt": "x", **FAST, "model": "tiny-b"})
    message = assert_error(r, 422, "does_not_fit", "width")["message"]
    assert "not even 256x256 fits beside them" in message, message
    assert c.post("/generate", json={"prompt": "x", **FAST, "vae": "tiny-vae-b"}).status_code == 200


@pytest.fixture(scope="module")
def roomier(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """0.03 GiB: base, tiny-b, refiner and a call fit, not with a ControlNet as well."""
    settings = tiny_settings(
        model_cache, tmp_path_factory.mktemp("images"), gpu_memory_gb=0.03, device="cpu", model_cache_max_models=3
    )
    live = start_server(settings)
    yield live
    live.stop()


def test_what_a_call_does_not_use_leaves_the_device_to_make_room(roomier: LiveServer) -> None:
    runner = roomier.service.runner
    budget = roomier.service.memory.budget
    assert roomier.service.memory.mode == memory.RESIDENT
    control = _b64(Image.new("RGB", (256, 256), (200, 30, 30)))
    with roomier.client() as c:
        first = c.post("/generate", json={"prompt": "x", **FAST, "model": "tiny-b"})
        assert first.status_code == 200, first.text
        r = c.post(
            "/generate", json={"prompt": "x", **FAST, "controlnet": {"name": "tiny-controlnet", "image": control}}
        )
        assert r.status_code == 200, r.text
        assert runner.controlnets.has("tiny-controlnet") and runner.resident_bytes() <= budget
        refined = c.post("/refine", json={"id": first.json()["id"], "prompt": "x", "seed": 1})
        assert refined.status_code == 200, refined.text
        # The refiner's UNet needed the room: the idle ControlNet went, the models stayed.
        assert not runner.controlnets.has("tiny-controlnet")
        assert runner.cache.on_device() == ["tiny-b", "tiny"] or set(runner.cache.on_device()) == {"tiny", "tiny-b"}
        assert runner.parking.parked == set() and runner.resident_bytes() <= budget


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_startup_warm_up_runs_every_kind_of_call_and_reports_it(
    model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """On CUDA the warm-up is on by default and reports its peak; on the CPU it runs when asked, without a peak."""
    live = start_server(tiny_settings(model_cache, tmp_path_factory.mktemp("images"), warmup=True, device="cpu"))
    try:
        with live.client() as c:
            warm = c.get("/models").json()["memory"]["warmup"]
            assert warm["calls"] == ["refine", "img2img", "generate"]  # the generate last: the base UNet stays put
            assert warm["seconds"] > 0 and warm["peak_bytes"] is None
            assert live.service.refiner_loads == 1  # the refine loaded it, once; requests find it there
            assert c.post("/generate", json={"prompt": "x", **FAST}).status_code == 200
    finally:
        live.stop()
