"""A1111 request bodies → our requests, so every limit, the admission, batching and provenance are the native ones.

What is taken: prompt (its `<lora:name:weight>` tags become LoRAs), negative_prompt, seed (-1: random), the sampler
(sampler_name, or the legacy sampler_index) and scheduler, batch_size x n_iter images, steps, cfg_scale, width and
height (rounded down to a multiple of 8, as A1111's latents are), override_settings' sd_model_checkpoint and sd_vae;
img2img's first init_image, mask and denoising_strength. Everything else is ignored, except the hires fix, which is
refused: it would silently change the picture's size otherwise.
"""

from __future__ import annotations

import math
import re
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from app.a1111_schemas import A1111_FIELDS, A1111Img2Img, A1111Txt2Img
from app.api.a1111 import samplers
from app.api.a1111.checkpoints import Checkpoints
from app.api.validation import with_rules
from app.engine import Engine
from app.errors import InvalidRequest
from app.schemas import GenerateRequest, Img2ImgRequest, InpaintRequest

LORA_TAG = re.compile(r"<lora:([^:<>]+)(?::([^:<>]*))?(?::[^<>]*)?>", re.IGNORECASE)
_NO_VAE = {"", "automatic", "none", "auto"}


def lora_tags(prompt: str) -> tuple[str, list[dict[str, Any]]]:
    """The prompt without its `<lora:name:weight>` tags, and the LoRAs they name (weight 1 when omitted)."""
    loras = []
    for name, weight in LORA_TAG.findall(prompt):
        try:
            scale = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise InvalidRequest(f"<lora:{name}:{weight}>: the weight must be a number", field="prompt") from None
        loras.append({"name": name.strip(), "scale": scale})
    return " ".join(LORA_TAG.sub(" ", prompt).split()), loras


def _int(value: float | None, field: str) -> int | None:
    if value is None:
        return None
    if not math.isfinite(value) or value != int(value):  # int() of inf or NaN raises: a 500, not a 422
        raise InvalidRequest(f"{field} must be a whole number, got {value:g}", field=field)
    return int(value)


def _side(value: float | None, field: str) -> int | None:
    side = _int(value, field)
    return None if not side else side // 8 * 8  # 0: the model's native size


def _sampler(body: A1111Txt2Img) -> str | None:
    name = body.sampler_name
    if name is None and isinstance(body.sampler_index, str):
        name = body.sampler_index
    elif name is None and isinstance(body.sampler_index, int):  # the oldest clients: an index into /samplers
        labels = list(samplers.SAMPLERS)
        name = labels[body.sampler_index] if 0 <= body.sampler_index < len(labels) else str(body.sampler_index)
    return samplers.resolve(name, body.scheduler)


def _model_and_vae(body: A1111Txt2Img, service: Engine, checkpoints: Checkpoints) -> tuple[str | None, str | None]:
    override = body.override_settings or {}
    model = checkpoints.current
    if override.get("sd_model_checkpoint"):
        model = checkpoints.match(service, override["sd_model_checkpoint"], "override_settings.sd_model_checkpoint")
    vae = override.get("sd_vae")
    if vae is None or (isinstance(vae, str) and vae.strip().lower() in _NO_VAE):
        return model, None
    if not isinstance(vae, str):
        raise InvalidRequest("override_settings.sd_vae must be a VAE name", field="override_settings.sd_vae")
    return model, vae.strip().removesuffix(".safetensors")


def _common(body: A1111Txt2Img, service: Engine, checkpoints: Checkpoints) -> dict[str, Any]:
    if body.enable_hr:
        raise InvalidRequest(
            "the hires fix (enable_hr) is not supported: generate at the final width and height, or redraw the "
            "image with /sdapi/v1/img2img",
            field="enable_hr",
        )
    prompt, loras = lora_tags(body.prompt or "")
    negative = body.negative_prompt or None
    model, vae = _model_and_vae(body, service, checkpoints)
    seed = _int(body.seed, "seed")
    images = (_int(body.batch_size, "batch_size") or 1) * (_int(body.n_iter, "n_iter") or 1)
    fields = {
        "prompt": prompt,
        "negative_prompt": negative,
        "seed": None if seed is None or seed < 0 else seed,
        "scheduler": _sampler(body),
        "num_images": images,
        "num_inference_steps": _int(body.steps, "steps") or None,
        "guidance_scale": body.cfg_scale,
        "width": _side(body.width, "width"),
        "height": _side(body.height, "height"),
        "model": model,
        "vae": vae,
        "loras": loras,
    }
    return fields


def _renamed(error: Any) -> Any:
    loc = tuple(error.get("loc") or ("body",))
    name = A1111_FIELDS.get(str(loc[0]), str(loc[0]))
    return {**error, "loc": ("body", name, *loc[1:])}


def _validated(model: type[BaseModel], fields: dict[str, Any]) -> Any:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        # The same 422 as a bad body, naming the A1111 field (batch_size, steps, cfg_scale, ...) rather than ours.
        raise RequestValidationError([_renamed(e) for e in with_rules(model, exc.errors())]) from None


def txt2img(body: A1111Txt2Img, service: Engine, checkpoints: Checkpoints) -> GenerateRequest:
    request: GenerateRequest = _validated(GenerateRequest, _common(body, service, checkpoints))
    return request


def img2img(body: A1111Img2Img, service: Engine, checkpoints: Checkpoints) -> Img2ImgRequest:
    if not body.init_images:
        raise InvalidRequest("init_images must hold one base64 image", field="init_images")
    if body.inpainting_mask_invert:
        raise InvalidRequest(
            "inpainting_mask_invert is not supported: send the inverted mask (white is repainted)",
            field="inpainting_mask_invert",
        )
    fields = {**_common(body, service, checkpoints), "image": body.init_images[0]}
    fields["strength"] = 0.75 if body.denoising_strength is None else body.denoising_strength  # A1111's default
    if body.mask:
        request: Img2ImgRequest = _validated(InpaintRequest, {**fields, "mask": body.mask})
    else:
        request = _validated(Img2ImgRequest, fields)
    return request
