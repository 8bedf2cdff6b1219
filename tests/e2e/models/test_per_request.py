"""LoRA, VAE, ControlNet and scheduler chosen per request; ensemble refine on /generate."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from app.engine.images.metadata import read_provenance
from app.engine.jobs.items import GenerateParams, Setup, batch_key
from app.engine.models.tiny.build import ensure_tiny_models
from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import assert_error, pixels

REQUEST = {"prompt": "a lighthouse", "seed": 3, "num_inference_steps": 2}


@pytest.fixture(scope="module")
def live(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # A LoRA directory with the tiny LoRA under another name, as an operator would provide one.
    loras = tmp_path_factory.mktemp("loras")
    shutil.copy(ensure_tiny_models(model_cache).loras / "tiny-lora.safetensors", loras / "my-style.v2.safetensors")
    (loras / "not-a-lora.txt").write_text("ignored")
    settings = tiny_settings(model_cache, tmp_path_factory.mktemp("images"), watermark=False, lora_dir=loras)
    server = start_server(settings)
    yield server
    server.stop()


def _png(client: httpx.Client, **fields: Any) -> bytes:
    r = client.post("/generate", json={**REQUEST, **fields}, headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    return r.content


def _diff(a: bytes, b: bytes) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_lora_applies_to_its_request_only_and_scale_matters(live: LiveServer) -> None:
    with live.client() as c:
        plain = _png(c)
        full = _png(c, loras=[{"name": "tiny-lora", "scale": 1.0}])
        half = _png(c, loras=[{"name": "tiny-lora", "scale": 0.5}])
        assert _diff(plain, full) > 1 and _diff(plain, half) > 0.5 and _diff(full, half) > 0.5
        assert _png(c) == plain  # the next request without LoRA: exactly the un-adapted image
        assert _diff(_png(c, loras=[{"name": "tiny-lora", "scale": 0.0}]), plain) == 0  # scale 0: no change
        assert _png(c, loras=[{"name": "tiny-lora", "scale": 1.0}]) == full  # and it is reproducible
        record = read_provenance(full)
        assert record["loras"] == [{"name": "tiny-lora", "scale": 1.0}]


def test_lora_from_the_operators_directory(live: LiveServer) -> None:
    with live.client() as c:
        names = c.get("/models").json()["loras"]
        assert "my-style.v2" in names and "not-a-lora" not in names
        same = _png(c, loras=[{"name": "my-style.v2"}])
        assert _diff(same, _png(c, loras=[{"name": "tiny-lora"}])) == 0  # the same weights, another name
        assert_error(
            c.post("/generate", json={**REQUEST, "loras": [{"name": "nope"}]}), 422, "invalid_request", "loras[0].name"
        )
        twice = [{"name": "tiny-lora"}, {"name": "tiny-lora"}]
        assert_error(c.post("/generate", json={**REQUEST, "loras": twice}), 422, "invalid_request", "loras")
        for bad in ("../../etc/passwd", "/tmp/x.safetensors", "loras/tiny-lora", "tiny-lora.safetensors"):
            assert c.post("/generate", json={**REQUEST, "loras": [{"name": bad}]}).status_code == 422


async def test_different_adapter_sets_never_share_a_batch(live: LiveServer) -> None:
    with live.client() as c:
        solo = {scale: pixels(_png(c, seed=20, loras=[{"name": "tiny-lora", "scale": scale}])) for scale in (0.0, 1.0)}
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as ac:

        async def one(scale: float) -> bytes:
            body = {**REQUEST, "seed": 20, "loras": [{"name": "tiny-lora", "scale": scale}]}
            r = await ac.post("/generate", json=body, headers={"Accept": "image/png"})
            assert r.status_code == 200, r.text
            return r.content

        scales = [0.0, 1.0] * 3
        results = await asyncio.gather(*(one(s) for s in scales))
    for scale, png in zip(scales, results, strict=True):
        assert np.abs(pixels(png) - solo[scale]).mean() < 1.0, scale


def test_batch_key_separates_setups() -> None:
    def params(setup: Setup) -> GenerateParams:
        return GenerateParams("p", None, None, None, 256, 256, 4, 5.0, 1, setup)

    keys = {
        batch_key(params(setup))
        for setup in (
            Setup("tiny"),
            Setup("tiny-b"),
            Setup("tiny", scheduler="ddim"),
            Setup("tiny", vae="tiny-vae-b"),
            Setup("tiny", loras=(("tiny-lora", 1.0),)),
            Setup("tiny", loras=(("tiny-lora", 0.5),)),
        )
    }
    assert len(keys) == 6


def test_vae_per_request(live: LiveServer) -> None:
    with live.client() as c:
        plain = _png(c)
        other = _png(c, vae="tiny-vae-b")
        assert _diff(plain, other) > 5
        assert _png(c) == plain
        assert read_provenance(other)["vae"] == "tiny-vae-b"
        error = assert_error(
            c.post("/generate", json={**REQUEST, "vae": "sdxl-vae-fp16-fix"}), 422, "invalid_request", "vae"
        )
        assert "does not fit" in error["message"]  # a real SDXL VAE is refused for a tiny model, before any load


def test_scheduler_by_name_without_touching_the_shared_pipeline(live: LiveServer) -> None:
    with live.client() as c:
        plain = _png(c)
        shared = live.service.base_pipeline.scheduler
        results = {name: _png(c, scheduler=name) for name in ("euler_a", "dpmpp_2m_karras", "DPM++ 2M Karras", "ddim")}
        assert _diff(results["dpmpp_2m_karras"], results["DPM++ 2M Karras"]) == 0  # A1111's label: the same
        # Different samplers, different pictures (identical would be exactly 0 here: CPU runs are deterministic).
        assert _diff(plain, results["euler_a"]) > 0.2 and _diff(results["ddim"], results["euler_a"]) > 0.2
        assert live.service.base_pipeline.scheduler is shared and type(shared).__name__ == "EulerDiscreteScheduler"
        assert _png(c) == plain
        assert read_provenance(results["ddim"])["scheduler"] == "ddim"
        error = assert_error(
            c.post("/generate", json={**REQUEST, "scheduler": "plms"}), 422, "invalid_request", "scheduler"
        )
        assert "unipc" in error["message"]


def test_controlnet(live: LiveServer) -> None:
    gradient = Image.fromarray(np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))).convert("RGB")
    with live.client() as c:

        def control(scale: float, image: Image.Image = gradient) -> bytes:
            return _png(c, controlnet={"name": "tiny-controlnet", "image": _b64(image), "conditioning_scale": scale})

        strong, weak = control(1.0), control(0.2)
        assert _diff(strong, weak) > 1
        # The control image itself matters too. The tiny network's group norms flatten most of it, so the effect
        # is small; CPU runs are deterministic, so an image without effect would differ by exactly 0.
        assert _diff(strong, control(1.0, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT))) > 0.02
        assert control(1.0) == strong
        assert read_provenance(strong)["controlnet"] == {"name": "tiny-controlnet", "conditioning_scale": 1.0}
        bad = {**REQUEST, "controlnet": {"name": "canny-sdxl", "image": _b64(gradient)}}
        assert_error(c.post("/generate", json=bad), 422, "invalid_request", "controlnet.name")
        bad = {**REQUEST, "controlnet": {"name": "tiny-controlnet", "image": "not base64!"}}
        assert_error(c.post("/generate", json=bad), 422, "invalid_request", "controlnet.image")


def test_ensemble_refine_on_generate(live: LiveServer) -> None:
    with live.client() as c:
        plain = _png(c, num_inference_steps=4)
        r = c.post(
            "/generate",
            json={**REQUEST, "num_inference_steps": 4, "refine": {"mode": "ensemble", "high_noise_frac": 0.5}},
        )
        assert r.status_code == 200, r.text
        ensemble = c.get(f"/download/{r.json()['id']}").content
        assert _diff(plain, ensemble) > 1
        job = c.get(f"/jobs/{r.json()['job_id']}").json()
        assert job["progress"] == {"step": 4, "total": 4}  # 2 base steps, then 2 refiner steps
        # The refiner shares the base's modules, as for /refine.
        base, refiner = live.service.base_pipeline, live.service.refiner_pipeline
        assert refiner.text_encoder_2 is base.text_encoder_2 and refiner.vae is base.vae
        assert read_provenance(ensemble)["refine"] == {"mode": "ensemble", "high_noise_frac": 0.5}
        too_few = {**REQUEST, "num_inference_steps": 1, "refine": {"mode": "ensemble", "high_noise_frac": 0.5}}
        assert_error(c.post("/generate", json=too_few), 422, "invalid_request", "refine.high_noise_frac")
        other = {**REQUEST, "model": "tiny-b", "refine": {"mode": "ensemble"}}
        assert_error(c.post("/generate", json=other), 422, "invalid_request", "refine")


def test_a_lora_never_leaks_into_refine(live: LiveServer) -> None:
    """The tiny LoRA has text_encoder_2 layers, and the refiner shares that encoder with the default model."""
    with live.client() as c:
        source = c.post("/generate", json=REQUEST).json()["id"]
        refine = {"id": source, "prompt": "detailed", "seed": 9, "strength": 0.5}
        before = c.post("/refine", json=refine, headers={"Accept": "image/png"}).content
        _png(c, loras=[{"name": "tiny-lora", "scale": 1.0}])  # leaves the adapter loaded on text_encoder_2
        after = c.post("/refine", json=refine, headers={"Accept": "image/png"}).content
        assert _diff(before, after) == 0


def test_the_lcm_scheduler_for_few_step_models(client: httpx.Client) -> None:
    """LCM (issue 16): guidance off by default, at most 2, and at most LCMScheduler's 50 steps; in A1111's terms too."""
    r = client.post("/generate", json={"prompt": "x", "scheduler": "lcm", "num_inference_steps": 4, "seed": 1})
    assert r.status_code == 200, r.text
    record = read_provenance(client.get(f"/download/{r.json()['id']}").content)
    assert (record["scheduler"], record["guidance_scale"], record["steps"]) == ("lcm", 1.0, 4)
    downloaded = Image.open(io.BytesIO(client.get(f"/download/{r.json()['id']}").content))
    assert isinstance(downloaded, PngImagePlugin.PngImageFile)  # its text chunks
    assert "Sampler: LCM," in downloaded.text["parameters"]
    error = assert_error(
        client.post("/generate", json={"prompt": "x", "scheduler": "lcm", "guidance_scale": 7}), 422, "invalid_request"
    )
    assert error["field"] == "guidance_scale" and "between 0 and 2" in error["message"] and "got 7" in error["message"]
    error = assert_error(
        client.post("/generate", json={"prompt": "x", "scheduler": "lcm", "num_inference_steps": 60}),
        422,
        "invalid_request",
    )
    assert error["field"] == "num_inference_steps" and "between 1 and 50" in error["message"]
    a1111 = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "sampler_name": "LCM", "steps": 4, "cfg_scale": 1})
    assert a1111.status_code == 200, a1111.text
    assert json.loads(a1111.json()["info"])["sampler_name"] == "LCM"
