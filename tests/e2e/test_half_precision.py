"""The half-precision lane: bf16 and fp16 on the tiny model, on the CPU, where fp32 hides GPU bugs.

Every kind of call that builds a view of the shared base pipeline (img2img, inpaint, ControlNet), the refiner
(which borrows the base's text_encoder_2 and VAE) and an ensemble run in one server per dtype; afterwards every
shared module must still have the server's dtype, and `/models` the same bytes. A fault injected *inside*
`vae.decode` of a VAE with `force_upcast` (as the real SDXL VAE has) must leave the VAE in fp16 and the next request
served. CPU half precision is slow (about 8x fp32), so the calls are few and small.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from PIL import Image

from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import assert_error

STEPS = {"num_inference_steps": 2, "seed": 3}


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module", params=["bfloat16", "float16"])
def half(request: pytest.FixtureRequest, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    dtype: str = request.param
    live = start_server(
        tiny_settings(
            model_cache, tmp_path_factory.mktemp(f"images-{dtype}"), device="cpu", dtype=dtype, watermark=False
        )
    )
    yield live, getattr(torch, dtype)
    live.stop()


def _shared_modules(live: LiveServer) -> dict[str, Any]:
    """Every module a later call shares: the base's own, and the refiner's (two of them borrowed)."""
    runner = live.service.runner
    base = runner.default_pipeline
    modules = {f"base.{name}": getattr(base, name) for name in ("unet", "vae", "text_encoder", "text_encoder_2")}
    if runner.refiner is not None:
        modules |= {f"refiner.{name}": getattr(runner.refiner, name) for name in ("unet", "vae", "text_encoder_2")}
    return modules


def _model_bytes(client: httpx.Client, name: str = "tiny") -> int:
    models = client.get("/models").json()["models"]
    entry = next(m for m in models if m["name"] == name)
    return int(entry["bytes"])


def _pixels(response: httpx.Response, client: httpx.Client) -> bytes:
    assert response.status_code == 200, response.text
    png = client.get(f"/download/{response.json()['id']}").content
    return Image.open(io.BytesIO(png)).tobytes()


def test_a_lora_leaves_no_trace_in_later_requests(half: Any) -> None:
    """On tiny-b, which no other test here gives a LoRA. PEFT turned `requires_grad` off on every base weight when it
    loaded the first LoRA, and CPU half-precision `linear` takes another kernel for such a weight: every later request
    without a LoRA gave other pixels (a third of them, by up to 2 levels) than before it."""
    live, _ = half
    with httpx.Client(base_url=live.url, timeout=300) as client:
        plain = {"prompt": "a red barn", "model": "tiny-b", **STEPS}
        before = _pixels(client.post("/generate", json=plain), client)
        pipe = live.service.runner.cache.slots["tiny-b"].pipe
        modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
        assert not any(p.requires_grad for m in modules for p in m.parameters())  # switched off at load, once
        lora = {**plain, "loras": [{"name": "tiny-lora", "scale": 0.8}]}
        assert _pixels(client.post("/generate", json=lora), client) != before  # the LoRA does change the image
        assert _pixels(client.post("/generate", json=plain), client) == before


def test_every_kind_of_call_keeps_the_shared_modules_in_their_dtype(half: Any) -> None:
    live, dtype = half
    with httpx.Client(base_url=live.url, timeout=300) as client:
        before = _model_bytes(client)
        source = client.post("/generate", json={"prompt": "a field", **STEPS})
        assert source.status_code == 200, source.text
        image_id = source.json()["id"]
        mask = _b64(Image.new("L", (256, 256), 255))  # white: repaint everything
        control = _b64(Image.new("RGB", (256, 256), (200, 30, 30)))
        calls = [
            ("/img2img", {"image_id": image_id, "strength": 0.5}),
            ("/inpaint", {"image_id": image_id, "mask": mask}),
            ("/generate", {"controlnet": {"name": "tiny-controlnet", "image": control}}),
            ("/refine", {"id": image_id, "strength": 0.5, "num_inference_steps": 2}),
            ("/generate", {"refine": {"mode": "ensemble", "high_noise_frac": 0.5}, "num_inference_steps": 4}),
            # The per-request options, and a switch to another model and back.
            ("/generate", {"scheduler": "euler_a"}),
            ("/generate", {"scheduler": "lcm"}),  # few-step models: guidance off, one UNet row per image
            ("/generate", {"vae": "tiny-vae-b"}),
            ("/generate", {"model": "tiny-b"}),
            ("/generate", {}),
        ]
        for route, fields in calls:
            body = {"prompt": "a red barn", **STEPS, **fields}
            if route == "/refine":
                body = {"prompt": "a red barn", "seed": 3, **fields}
            response = client.post(route, json=body)
            assert response.status_code == 200, f"{route}: {response.text}"
            wrong = {name: m.dtype for name, m in _shared_modules(live).items() if m.dtype != dtype}
            assert not wrong, f"after {route}: {wrong} (expected {dtype})"
        assert _model_bytes(client) == before, "the base pipeline grew: a shared module was cast to float32"
        assert live.service.runner.refiner.vae is live.service.runner.default_pipeline.vae
        other = live.service.runner.cache.slots["tiny-b"].pipe
        assert {m.dtype for m in (other.unet, other.vae, other.text_encoder, other.text_encoder_2)} == {dtype}
        vaes = dict(live.service.runner.vaes.loaded())
        assert vaes["tiny-vae-b"].dtype == dtype
        # A LoRA adds adapter weights in the server's dtype, and the budget counts them.
        lora = client.post("/generate", json={"prompt": "x", **STEPS, "loras": [{"name": "tiny-lora", "scale": 0.8}]})
        assert lora.status_code == 200, lora.text
        wrong = {name: m.dtype for name, m in _shared_modules(live).items() if m.dtype != dtype}
        assert not wrong, f"after a LoRA: {wrong} (expected {dtype})"
        assert _model_bytes(client) > before


def test_a_fault_inside_an_upcast_vae_decode_leaves_the_vae_in_fp16(half: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    live, dtype = half
    if dtype is not torch.float16:
        pytest.skip("diffusers upcasts the VAE for decoding only in fp16")
    vae = live.service.runner.default_pipeline.vae
    vae.register_to_config(force_upcast=True)  # as the real SDXL VAE has it (the tiny one does not)
    real_decode = vae.decode
    calls = {"n": 0}

    def decode_out_of_memory(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            assert vae.dtype == torch.float32, "diffusers upcast the VAE before decoding (the trap)"
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(vae, "decode", decode_out_of_memory)
    try:
        with httpx.Client(base_url=live.url, timeout=300) as client:
            failed = client.post("/generate", json={"prompt": "a barn", **STEPS})
            assert_error(failed, 503, "out_of_memory")
            assert vae.dtype == torch.float16, "the failed decode left the shared VAE in float32"
            again = client.post("/generate", json={"prompt": "a barn", **STEPS})
            assert again.status_code == 200, again.text
            assert client.get("/ready").status_code == 200
    finally:
        vae.register_to_config(force_upcast=False)
