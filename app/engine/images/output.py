"""What happens to a finished image off the GPU owner's thread: provenance, watermark, PNG encoding."""

from __future__ import annotations

from PIL import Image

from app.engine.images.metadata import Provenance, encode_png
from app.engine.images.watermark import apply_watermark
from app.engine.jobs.items import GenerateParams, RefineParams


def generate_provenance(p: GenerateParams, *, scheduler: str, watermark: bool) -> Provenance:
    return Provenance(
        kind=p.kind,
        model=p.setup.model,
        prompt=p.prompt,
        negative_prompt=p.negative_prompt,
        prompt_2=p.prompt_2,
        negative_prompt_2=p.negative_prompt_2,
        seed=p.seed,
        steps=p.steps,
        guidance_scale=p.guidance,
        width=p.width,
        height=p.height,
        scheduler=scheduler,
        watermark=watermark,
        strength=p.strength,
        parent_id=p.parent_id,
        loras=[{"name": name, "scale": scale} for name, scale in p.setup.loras],
        vae=p.setup.vae,
        controlnet=None if p.control is None else {"name": p.control.name, "conditioning_scale": p.control.scale},
        refine=None if p.high_noise_frac is None else {"mode": "ensemble", "high_noise_frac": p.high_noise_frac},
    )


def refine_provenance(
    p: RefineParams, *, model: str, scheduler: str, watermark: bool, parent_id: str | None
) -> Provenance:
    return Provenance(
        kind="refine",
        model=model,
        prompt=p.prompt,
        negative_prompt=p.negative_prompt,
        prompt_2=None,
        negative_prompt_2=None,
        seed=p.seed,
        steps=p.steps,
        guidance_scale=p.guidance,
        width=p.image.width,
        height=p.image.height,
        scheduler=scheduler,
        watermark=watermark,
        strength=p.strength,
        parent_id=parent_id,
    )


def encode(image: Image.Image, provenance: Provenance) -> bytes:
    if provenance.watermark:
        image = apply_watermark(image)
    return encode_png(image, provenance)
