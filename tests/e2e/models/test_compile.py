"""SDXL_TORCH_COMPILE on the tiny model, CPU, with inductor (the real compiler, not a stand-in backend).

One compiled server and one eager server per dtype (fp32, and bf16 for the half-precision lane). After the startup
warm-up, a mixed workload (batch sizes 1 to 3, three image sizes, guidance on and off, the LCM scheduler, a LoRA on
and off again, img2img, refine) must compile nothing more: every graph it needs was built at startup. And the same
seed gives the same picture as the eager server, within float noise: compiling changes the order of float
operations, never the image.

Compiling costs minutes on 2 CPU cores (about 100 s for the first graphs); the speed-up is a GPU figure
(`python -m bench --full-size --device cuda`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import pixels

STEPS = {"num_inference_steps": 2}
# fp32: compiling changes only the order of float operations (about 1e-5 before quantisation to 8 bits), so images
# match to within a pixel level. Half precision is measured against its own error: inductor fuses ops and rounds at
# other points (often in fp32), so a compiled image must be about as close to the fp32 picture as the eager one is.
FP32_MEAN, FP32_WORST = 0.05, 2.0
HALF_SLACK = 1.5


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def servers(
    request: pytest.FixtureRequest, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, list[LiveServer], str]]:
    """The compiled server, and its eager references: the same dtype, then fp32 (for half precision)."""
    dtype: str = request.param
    common: dict[str, Any] = {"device": "cpu", "watermark": False}
    compiled = start_server(
        tiny_settings(model_cache, tmp_path_factory.mktemp("compiled"), torch_compile=True, dtype=dtype, **common),
        ready_within_s=1200,
    )
    dtypes = [dtype] if dtype == "float32" else [dtype, "float32"]
    eager = [start_server(tiny_settings(model_cache, tmp_path_factory.mktemp(d), dtype=d, **common)) for d in dtypes]
    yield compiled, eager, dtype
    for live in (compiled, *eager):
        live.stop()


def _compiled_graphs(client: httpx.Client) -> dict[str, int]:
    found = re.findall(r'^sdxl_compile_seconds_count\{part="(\w+)"\} (\S+)$', client.get("/metrics").text, re.M)
    return {part: int(float(n)) for part, n in found}


def _generate(client: httpx.Client, **fields: Any) -> list[bytes]:
    r = client.post("/generate", json={"prompt": "a lighthouse", "seed": 7, **STEPS, **fields})
    assert r.status_code == 200, r.text
    return [client.get(f"/download/{image['id']}").content for image in r.json()["images"]]


def _workload(live: LiveServer) -> list[bytes]:
    """Every kind of call the batcher makes, in a fixed order; the PNGs in order."""
    with httpx.Client(base_url=live.url, timeout=600) as c:
        out = _generate(c)  # batch 1, guidance on: two UNet rows
        out += _generate(c, guidance_scale=1.0)  # one row
        out += _generate(c, width=320, height=256, num_images=3)  # another size, a batch of 3
        out += _generate(c, width=256, height=384, guidance_scale=1.0, num_images=2)
        out += _generate(c, scheduler="lcm", guidance_scale=1.0)
        out += _generate(c, loras=[{"name": "tiny-lora", "scale": 0.8}])  # runs uncompiled
        out += _generate(c)  # the LoRA unloaded again: the compiled graphs hold
        source = c.post("/generate", json={"prompt": "a field", "seed": 1, **STEPS}).json()["id"]
        for path, body in (
            ("/img2img", {"image_id": source, "strength": 0.5}),
            ("/refine", {"id": source, "strength": 0.5}),
        ):
            r = c.post(path, json={"prompt": "a field", "seed": 2, **STEPS, **body})
            assert r.status_code == 200, r.text
            out.append(c.get(f"/download/{r.json()['id']}").content)
    return out


async def _concurrent(live: LiveServer, n: int) -> None:
    """n requests at once: the batcher puts them in one call of n images."""
    async with httpx.AsyncClient(base_url=live.url, timeout=600) as c:
        answers = await asyncio.gather(
            *(c.post("/generate", json={"prompt": f"boat {i}", "seed": i, **STEPS}) for i in range(n))
        )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]


def _difference(a: bytes, b: bytes) -> tuple[float, float]:
    """Mean and worst difference in pixel levels (of 255)."""
    d = np.abs(pixels(a) - pixels(b))
    return float(d.mean()), float(d.max())


def test_the_warm_up_compiles_every_graph_and_images_match_eager(
    servers: tuple[LiveServer, list[LiveServer], str],
) -> None:
    compiled, eager, dtype = servers
    with httpx.Client(base_url=compiled.url, timeout=60) as c:
        warmed = _compiled_graphs(c)
        warmup = c.get("/models").json()["memory"]["warmup"]
    # The UNet's block for one row and for more; on CPU the VAE decoder stays eager (compiled.py says why).
    assert warmed == {"unet": 2}, warmed
    assert warmup["compiled_graphs"] == {"unet": 2, "vae_decoder": 0}, warmup

    images = _workload(compiled)
    asyncio.run(_concurrent(compiled, 3))
    with httpx.Client(base_url=compiled.url, timeout=60) as c:
        assert _compiled_graphs(c) == warmed, "a request after the warm-up had to compile"

    references = [_workload(live) for live in eager]
    assert len(images) == len(references[0]) == 12
    failures = []
    for i, image in enumerate(images):
        if dtype == "float32":
            (mean, worst), (mean_limit, worst_limit) = _difference(image, references[0][i]), (FP32_MEAN, FP32_WORST)
        else:  # as close to the fp32 picture as eager half precision is, give or take half of its own error
            truth = references[1][i]
            mean, worst = _difference(image, truth)
            noise_mean, noise_worst = _difference(references[0][i], truth)
            mean_limit, worst_limit = HALF_SLACK * noise_mean + FP32_MEAN, HALF_SLACK * noise_worst + FP32_WORST
        if mean > mean_limit or worst > worst_limit:
            failures.append(
                f"image {i}: {mean:.3f} mean, {worst:.0f} worst; allowed {mean_limit:.3f}, {worst_limit:.0f}"
            )
    assert not failures, f"compiled {dtype} vs eager: " + "; ".join(failures)


def test_shared_modules_keep_their_dtype_and_the_lora_is_gone(
    servers: tuple[LiveServer, list[LiveServer], str],
) -> None:
    compiled, _, dtype = servers
    runner = compiled.service.runner
    base = runner.default_pipeline
    import torch

    wanted = getattr(torch, dtype)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        tensors = [*getattr(base, name).parameters()]
        assert {t.dtype for t in tensors} == {wanted}, name
    for name in ("unet", "vae"):  # what the graphs' guards see; PEFT must not have turned it back on
        assert not any(t.requires_grad for t in getattr(base, name).parameters()), name
    # After a call without LoRA, the PEFT layers are unloaded, not merely disabled (they would void the graphs).
    assert not base.get_list_adapters()
