"""Picking a model per request; the cache moving models between device, CPU tier and disk."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from typing import Any

import httpx
import numpy as np
from huggingface_hub import try_to_load_from_cache

from tests.conftest import LiveServer
from tests.e2e.models.conftest import registry_server
from tests.helpers import assert_error, pixels

REQUEST = {"prompt": "a lighthouse", "seed": 7, "num_inference_steps": 2}


def _png(client: httpx.Client, **fields: Any) -> bytes:
    r = client.post("/generate", json={**REQUEST, **fields}, headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return r.content


def _models(client: httpx.Client) -> dict[str, dict[str, Any]]:
    r = client.get("/models")
    assert r.status_code == 200, r.text
    return {m["name"]: m for m in r.json()["models"]}


def test_models_lists_every_entry_with_its_place_and_defaults(tiered: LiveServer) -> None:
    with tiered.client() as c:
        body = c.get("/models").json()
    names = [m["name"] for m in body["models"]]
    assert names[0] == "tiny" and body["default"] == "tiny"
    expected = {"sdxl-base", "sdxl-turbo", "sdxl-anime", "sdxl-anime-legacy", "tiny", "tiny-b", "tiny-c", "broken"}
    assert expected <= set(names)
    models = {m["name"]: m for m in body["models"]}
    assert models["tiny"]["pinned"] and models["tiny"]["location"] == "device" and models["tiny"]["bytes"] > 0
    # Not loaded: where its files are. The hub cache is read directly here, so the test holds on a machine that
    # has SDXL downloaded too.
    cached = try_to_load_from_cache("stabilityai/stable-diffusion-xl-base-1.0", "model_index.json")
    assert models["sdxl-base"]["location"] == ("disk" if isinstance(cached, str) else "not_downloaded")
    assert models["sdxl-base"]["bytes"] is None and not models["sdxl-base"]["loaded"]
    assert models["tiny-c"]["location"] == "disk" and models["broken"]["location"] == "missing"
    assert models["sdxl-base"]["source"] == "stabilityai/stable-diffusion-xl-base-1.0"
    turbo = models["sdxl-turbo"]["defaults"]
    assert (turbo["width"], turbo["num_inference_steps"], turbo["guidance_scale"], turbo["max_steps"]) == (
        512,
        1,
        0.0,
        4,
    )
    assert models["sdxl-anime"]["source"] == "cagliostrolab/animagine-xl-4.0"
    assert models["sdxl-anime-legacy"]["source"] == "cagliostrolab/animagine-xl-3.1"
    assert models["tiny-c"]["defaults"]["num_inference_steps"] == 3  # per-model defaults from the file
    assert "tiny-lora" in body["loras"] and "tiny-vae-b" in body["vaes"]
    assert "tiny-controlnet" in body["controlnets"] and "dpmpp_2m_karras" in body["schedulers"]
    assert body["budget"] == {
        "max_models": 2,
        "max_bytes": 0,
        "cpu_tier": 1,
        "device_bytes": models["tiny"]["bytes"],
    }


def test_switching_moves_models_through_the_tiers_and_back(tiered: LiveServer) -> None:
    with tiered.client() as c:
        a = _png(c)
        b = _png(c, model="tiny-b")
        assert np.abs(pixels(a) - pixels(b)).mean() > 5  # other weights, other picture
        assert _png(c, model_type="tiny-b") == b  # the alias, and the same bytes from the cache
        m = _models(c)
        assert (m["tiny-b"]["location"], m["tiny-b"]["loads"], m["tiny-b"]["misses"], m["tiny-b"]["hits"]) == (
            "device",
            1,
            1,
            1,
        )
        # A third model: the device holds two, so tiny-b (least recently used, not pinned) goes to the CPU tier.
        _png(c, model="tiny-c")
        m = _models(c)
        assert m["tiny-b"]["location"] == "cpu" and m["tiny-c"]["location"] == "device"
        assert m["tiny"]["location"] == "device"  # pinned
        # Back to tiny-b: from the CPU tier, not the disk; tiny-c takes its place in the tier.
        assert _png(c, model="tiny-b") == b
        m = _models(c)
        assert m["tiny-b"]["location"] == "device" and m["tiny-b"]["loads"] == 1 and m["tiny-b"]["misses"] == 2
        assert m["tiny-c"]["location"] == "cpu"
        assert _png(c) == a  # the default model is untouched by all of this


def test_unknown_model_is_422_listing_the_choices(tiered: LiveServer) -> None:
    with tiered.client() as c:
        error = assert_error(
            c.post("/generate", json={**REQUEST, "model": "sdxl-nope"}), 422, "invalid_request", "model"
        )
        assert "tiny-b" in error["message"] and "sdxl-turbo" in error["message"]
        # Paths and URLs are never loaded: they are just unknown names (or fail the name pattern).
        # "stabilityai/sdxl-turbo" passes the name pattern but is a source, not a name: looked up, not loaded.
        for bad in ("/etc/passwd", "../tiny", "https://example.invalid/model", "tiny\x00", "stabilityai/sdxl-turbo"):
            r = c.post("/generate", json={**REQUEST, "model": bad})
            assert r.status_code == 422, (bad, r.text)


def test_a_failed_load_leaves_the_loaded_models_serving(tiered: LiveServer) -> None:
    with tiered.client() as c:
        before = _models(c)
        assert_error(c.post("/generate", json={**REQUEST, "model": "broken"}), 503, "model_load_failed")
        after = _models(c)
        for name in ("tiny", "tiny-b", "tiny-c"):
            assert after[name]["location"] == before[name]["location"], name
        assert after["broken"]["location"] == "missing"  # its directory does not exist
        assert c.get("/ready").status_code == 200
        assert c.post("/generate", json={**REQUEST, "model": "tiny-b"}).status_code == 200


def test_model_steps_ceiling_and_defaults_apply(tiered: LiveServer) -> None:
    with tiered.client() as c:
        r = c.post("/generate", json={"prompt": "x", "model": "tiny-c", "seed": 1})
        assert r.status_code == 200
        job = c.get(f"/jobs/{r.json()['job_id']}").json()
        assert job["progress"]["total"] == 3 and job["model"] == "tiny-c"


async def test_concurrent_requests_for_different_models_never_mix(tiered: LiveServer) -> None:
    """Alternating models submitted at once: each image equals the one its model gives alone."""
    with tiered.client() as c:
        solo = {m: pixels(_png(c, model=m, seed=s)) for m, s in (("tiny", 11), ("tiny-b", 12))}

    async with httpx.AsyncClient(base_url=tiered.url, timeout=60) as ac:

        async def one(model: str, seed: int) -> bytes:
            r = await ac.post(
                "/generate", json={**REQUEST, "model": model, "seed": seed}, headers={"Accept": "image/png"}
            )
            assert r.status_code == 200, r.text
            return r.content

        jobs = [("tiny", 11), ("tiny-b", 12)] * 3
        results = await asyncio.gather(*(one(m, s) for m, s in jobs))
    for (model, _), png in zip(jobs, results, strict=True):
        assert np.abs(pixels(png) - solo[model]).mean() < 1.0, model


def test_an_evicted_pipeline_is_really_freed(model_cache, tmp_path) -> None:  # type: ignore[no-untyped-def]
    live = registry_server(model_cache, tmp_path, model_cache_max_models=2, model_cpu_tier=0)
    try:
        with live.client() as c:
            _png(c, model="tiny-b")
            cache = live.service.runner.cache
            unet = weakref.ref(cache.slots["tiny-b"].pipe.unet)
            _png(c, model="tiny-c")  # evicts tiny-b, with no CPU tier: dropped
            assert _models(c)["tiny-b"]["location"] == "disk"
        gc.collect()
        assert unet() is None, gc.get_referrers(unet())
    finally:
        live.stop()


def test_requests_cannot_make_the_server_download_models(tiered: LiveServer) -> None:
    """sdxl-turbo is in the registry but not on this machine: with downloads off (the default) the load looks at
    local files only, fails at once, and is not retried for a while."""
    with tiered.client() as c:
        started = time.monotonic()
        error = assert_error(c.post("/generate", json={**REQUEST, "model": "sdxl-turbo"}), 503, "model_load_failed")
        assert "SDXL_DOWNLOAD_MODELS" in error["message"]
        assert "local_files_only" not in error["message"]  # diffusers' advice is for code, not for an API caller
        assert time.monotonic() - started < 20
        again = c.post("/generate", json={**REQUEST, "model": "sdxl-turbo"})
        assert_error(again, 503, "model_load_failed")
        assert "not retried" in again.json()["error"]["message"] and int(again.headers["retry-after"]) > 0
        assert c.get("/ready").status_code == 200


def test_a_per_model_vae_from_the_registry(tiered: LiveServer) -> None:
    """A registry entry may name its VAE: the same as asking for that VAE per request on the same weights."""
    with tiered.client() as c:
        per_model = _png(c, model="tiny-with-vae-b")
        per_request = _png(c, vae="tiny-vae-b")
        assert np.abs(pixels(per_model) - pixels(per_request)).mean() == 0
        assert np.abs(pixels(per_model) - pixels(_png(c))).mean() > 5
