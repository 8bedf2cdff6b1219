"""Turns validated API requests into per-image pipeline parameters, under the configured limits.

The schema already enforced the hard ceilings; here the model's defaults fill the gaps and the limits an
operator configured (SDXL_MAX_SIDE, SDXL_MAX_PIXELS, SDXL_MAX_STEPS) are checked, with messages that say
what is allowed.
"""

from __future__ import annotations

import secrets
from typing import Any

from PIL import Image

from app.config import Settings
from app.engine.images import inputs
from app.engine.jobs.items import Control, GenerateParams, RefineParams, Setup
from app.engine.models import samplers
from app.engine.models.registry import Defaults, ModelEntry, Registry
from app.errors import InvalidRequest
from app.schemas import MAX_SEED, GenerateRequest, Img2ImgRequest, PictureRequest, RefineRequest


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


def check_work(settings: Settings, items: list[GenerateParams] | list[RefineParams]) -> None:
    """A compute budget per request: one request must not hold the only GPU worker for hours."""
    first = items[0]
    width, height = first.size if isinstance(first, RefineParams) else (first.width, first.height)
    scheduler = None if isinstance(first, RefineParams) else first.setup.scheduler
    evaluations = samplers.EVALUATIONS_PER_STEP.get(scheduler or "", 1)
    work = width * height * first.steps_run * evaluations * len(items) / 1e6
    limit = settings.max_work_mpx_steps
    if work > limit:
        images = "" if isinstance(first, RefineParams) else f" x {len(items)} images"
        per_step = f" x {evaluations} ({scheduler} evaluates the model {evaluations} times a step)" * (evaluations > 1)
        raise InvalidRequest(
            f"width x height x denoising steps x images must be at most {limit:g} megapixel-steps "
            f"(SDXL_MAX_WORK_MPX_STEPS), got {width}x{height} x {first.steps_run} steps{per_step}{images} = "
            f"{work:.0f}; "
            "ask for fewer images, steps or pixels",
            field="num_inference_steps",
            details=[
                {"field": name, "message": "together too much work"}
                for name in ("width", "height", "num_inference_steps", "num_images")
            ],
        )


def check_steps(settings: Settings, steps: int) -> int:
    if steps > settings.max_steps:
        raise InvalidRequest(
            f"num_inference_steps must be between 1 and {settings.max_steps}, got {steps}",
            field="num_inference_steps",
        )
    return steps


def resolve_setup(settings: Settings, req: PictureRequest, registry: Registry) -> tuple[ModelEntry, Setup]:
    """The model and what the call is built from; unknown or unfit names answer 422 listing the choices."""
    entry = registry.model(req.model)
    names = [lora.name for lora in req.loras]
    if len(set(names)) != len(names):
        raise InvalidRequest("each LoRA may appear once in loras", field="loras")
    for i, lora in enumerate(req.loras):
        registry.lora(lora.name, entry, f"loras[{i}].name")
    if req.vae is not None:
        registry.vae(req.vae, entry)
    scheduler = samplers.canonical(req.scheduler) if req.scheduler is not None else entry.defaults.scheduler
    loras = tuple(sorted((lora.name, lora.scale) for lora in req.loras))
    return entry, Setup(model=entry.name, scheduler=scheduler, vae=req.vae, loras=loras)


def model_steps(settings: Settings, entry: ModelEntry, requested: int | None) -> int:
    steps = requested or entry.defaults.steps
    limit = min(settings.max_steps, entry.defaults.max_steps or settings.max_steps)
    if steps > limit:
        raise InvalidRequest(
            f"num_inference_steps must be between 1 and {limit} for {entry.name}, got {steps}",
            field="num_inference_steps",
        )
    return steps


def _guidance(entry: ModelEntry, requested: float | None, scheduler: str | None, steps: int) -> float:
    if scheduler == "lcm":  # few-step models are distilled for little or no guidance, and LCM for <= 50 steps
        if steps > samplers.LCM_MAX_STEPS:
            raise InvalidRequest(
                f"num_inference_steps: with the lcm scheduler, between 1 and {samplers.LCM_MAX_STEPS} "
                f"(few-step models want 2 to 8), got {steps}",
                field="num_inference_steps",
            )
        if requested is None:
            return 1.0  # guidance off: one UNet pass per step instead of two
        if requested > samplers.LCM_MAX_GUIDANCE:
            raise InvalidRequest(
                f"guidance_scale: with the lcm scheduler, between 0 and {samplers.LCM_MAX_GUIDANCE:g} (1 or less "
                f"turns guidance off), got {requested:g}",
                field="guidance_scale",
            )
    return entry.defaults.guidance if requested is None else requested


def _per_image(
    req: GenerateRequest | Img2ImgRequest,
    entry: ModelEntry,
    setup: Setup,
    width: int,
    height: int,
    steps: int,
    **extra: Any,
) -> list[GenerateParams]:
    """One entry per image; image i gets seed + i (wrapping), as AUTOMATIC1111 does."""
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
            guidance=_guidance(entry, req.guidance_scale, setup.scheduler, steps),
            seed=(seed + i) % (MAX_SEED + 1),
            setup=setup,
            **extra,
        )
        for i in range(req.num_images)
    ]


def generate_params(
    settings: Settings, req: GenerateRequest, registry: Registry, control: Image.Image | None = None
) -> list[GenerateParams]:
    entry, setup = resolve_setup(settings, req, registry)
    width, height = req.width or entry.defaults.size, req.height or entry.defaults.size
    check_size(settings, width, height)
    steps = model_steps(settings, entry, req.num_inference_steps)
    frac = None
    if req.refine is not None:
        if entry.name != registry.default:
            raise InvalidRequest(
                f"ensemble refine runs the refiner paired with the default model {registry.default!r}; "
                f"{entry.name!r} has none",
                field="refine",
            )
        if req.controlnet is not None:
            raise InvalidRequest("ensemble refine and a ControlNet cannot be combined", field="refine")
        frac = req.refine.high_noise_frac
        if int(steps * frac) < 1 or steps - int(steps * frac) < 1:
            raise InvalidRequest(
                f"with {steps} steps, high_noise_frac {frac:g} leaves the base or the refiner no step",
                field="refine.high_noise_frac",
            )
    ctrl = None
    if req.controlnet is not None:
        registry.controlnet(req.controlnet.name, entry)
        assert control is not None, "the service decodes the control image"
        ctrl = Control(req.controlnet.name, inputs.fit(control, width, height), req.controlnet.conditioning_scale)
    return _per_image(req, entry, setup, width, height, steps, control=ctrl, high_noise_frac=frac)


def edit_params(
    settings: Settings,
    req: Img2ImgRequest,
    registry: Registry,
    image: Image.Image,
    mask: Image.Image | None,
) -> list[GenerateParams]:
    """img2img (mask None) or inpaint: the output size defaults to the input's, rounded down to a multiple of 8."""
    entry, setup = resolve_setup(settings, req, registry)
    width = req.width or image.width // 8 * 8
    height = req.height or image.height // 8 * 8
    for name, value in (("width", width), ("height", height)):
        if value < 256:
            raise InvalidRequest(
                f"the output {name} would be {value}; give {name} (a multiple of 8, at least 256) to resize the input",
                field=name,
            )
    check_size(settings, width, height)
    steps = model_steps(settings, entry, req.num_inference_steps)
    if int(steps * req.strength) < 1:
        raise InvalidRequest(
            f"num_inference_steps * strength must be at least 1, got {steps} * {req.strength:g}",
            field="strength",
        )
    kind = "inpaint" if mask is not None else "img2img"
    image = inputs.fit(image, width, height)
    mask = inputs.fit(mask, width, height) if mask is not None else None
    extra = {"kind": kind, "image": image, "mask": mask, "strength": req.strength, "parent_id": req.image_id}
    return _per_image(req, entry, setup, width, height, steps, **extra)


def check_refine_steps(settings: Settings, req: RefineRequest, defaults: Defaults) -> int:
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


def refine_params(req: RefineRequest, steps: int, defaults: Defaults, image: Image.Image) -> RefineParams:
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
