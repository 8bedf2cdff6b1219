"""Turns validated API requests into per-image pipeline parameters, under the configured limits.

The schema already enforced the hard ceilings; here the model's defaults fill the gaps and the limits an
operator configured (SDXL_MAX_SIDE, SDXL_MAX_PIXELS, SDXL_MAX_STEPS) are checked, with messages that say
what is allowed.
"""

from __future__ import annotations

import secrets

from PIL import Image

from app.config import Settings
from app.engine.pipelines import GenerateParams, ModelDefaults, RefineParams
from app.errors import InvalidRequest
from app.schemas import MAX_SEED, GenerateRequest, RefineRequest


def _seed(seed: int | None) -> int:
    return secrets.randbelow(MAX_SEED + 1) if seed is None else seed


def check_size(settings: Settings, width: int, height: int) -> None:
    limit = settings.max_side
    for name, value in (("width", width), ("height", height)):
        if value > limit:
            raise InvalidRequest(f"{name} must be a multiple of 8 between 256 and {limit}, got {value}", field=name)
    if width * height > settings.max_pixels:
        raise InvalidRequest(
            f"width*height must be at most {settings.max_pixels} pixels, got {width}x{height}",
            field="width",
            details=[{"field": "width", "message": "too large"}, {"field": "height", "message": "too large"}],
        )


def check_steps(settings: Settings, steps: int) -> int:
    if steps > settings.max_steps:
        raise InvalidRequest(
            f"num_inference_steps must be between 1 and {settings.max_steps}, got {steps}",
            field="num_inference_steps",
        )
    return steps


def generate_params(settings: Settings, req: GenerateRequest, defaults: ModelDefaults) -> list[GenerateParams]:
    """One entry per image; image i gets seed + i (wrapping), as AUTOMATIC1111 does."""
    width, height = req.width or defaults.size, req.height or defaults.size
    check_size(settings, width, height)
    steps = check_steps(settings, req.num_inference_steps or defaults.steps)
    guidance = defaults.guidance if req.guidance_scale is None else req.guidance_scale
    seed = _seed(req.seed)
    return [
        GenerateParams(
            prompt=req.prompt,
            negative_prompt=req.negative_prompt,
            prompt_2=req.prompt_2,
            negative_prompt_2=req.negative_prompt_2,
            width=width,
            height=height,
            steps=steps,
            guidance=guidance,
            seed=(seed + i) % (MAX_SEED + 1),
        )
        for i in range(req.num_images)
    ]


def check_refine_steps(settings: Settings, req: RefineRequest, defaults: ModelDefaults) -> int:
    steps = check_steps(settings, req.num_inference_steps or defaults.refine_steps)
    if int(steps * req.strength) < 1:
        # diffusers runs int(steps * strength) steps and crashes on zero.
        raise InvalidRequest(
            f"num_inference_steps * strength must be at least 1, got {steps} * {req.strength:g}; "
            "raise num_inference_steps or strength",
            field="strength",
            details=[
                {"field": "num_inference_steps", "message": f"{steps} is too few for this strength"},
                {"field": "strength", "message": f"{req.strength:g} is too low for this many steps"},
            ],
        )
    return steps


def refine_params(req: RefineRequest, steps: int, defaults: ModelDefaults, image: Image.Image) -> RefineParams:
    return RefineParams(
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        strength=req.strength,
        steps=steps,
        guidance=defaults.guidance if req.guidance_scale is None else req.guidance_scale,
        aesthetic_score=req.aesthetic_score,
        negative_aesthetic_score=req.negative_aesthetic_score,
        seed=_seed(req.seed),
        image=image,
    )
