"""Request fields, typed for callers, and the one function that turns them into a JSON body.

Every method takes its fields as keyword arguments checked against these TypedDicts. A field this client does
not know yet (the service grew one) goes in `extra={...}`: it is sent as is, so the client never blocks a new
feature. Limits are not checked here: the service checks them and answers 422 naming the field.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

# An image to upload: raw bytes (PNG, JPEG or WebP), a path to read, or a str already base64-encoded.
ImageInput = bytes | os.PathLike[str] | str


class Lora(TypedDict):
    name: str
    scale: NotRequired[float]


class ControlNet(TypedDict):
    name: str
    image: ImageInput
    conditioning_scale: NotRequired[float]


class EnsembleRefine(TypedDict):
    """Base and refiner as an ensemble of experts: the base denoises the first `high_noise_frac` of the steps."""

    mode: Literal["ensemble"]
    high_noise_frac: NotRequired[float]


class _Extra(TypedDict, total=False):
    extra: Mapping[str, Any]  # fields this client does not know yet, sent as they are


class _Sampling(_Extra, total=False):
    negative_prompt: str | None
    num_inference_steps: int | None
    guidance_scale: float | None
    seed: int | None


class _Picture(_Sampling, total=False):
    width: int | None
    height: int | None
    model: str | None
    scheduler: str | None
    loras: list[Lora] | None
    vae: str | None


class GenerateParams(_Picture, total=False):
    prompt_2: str | None
    negative_prompt_2: str | None
    num_images: int
    controlnet: ControlNet | None
    refine: EnsembleRefine | None


class RefineParams(_Sampling, total=False):
    strength: float
    aesthetic_score: float
    negative_aesthetic_score: float


class ImageToImageParams(_Picture, total=False):
    image: ImageInput
    image_id: str
    strength: float


class InpaintParams(ImageToImageParams, total=False):
    mask: ImageInput
    mask_id: str


def encode_image(image: ImageInput) -> str:
    if isinstance(image, str):
        return image
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    return base64.b64encode(data).decode("ascii")


def request_body(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body: None means "the service's default", so it is left out; images are base64-encoded."""
    body = {k: v for k, v in fields.items() if v is not None and k != "extra"}
    for name in ("image", "mask"):
        if name in body:
            body[name] = encode_image(body[name])
    if isinstance(body.get("controlnet"), Mapping) and "image" in body["controlnet"]:
        body["controlnet"] = {**body["controlnet"], "image": encode_image(body["controlnet"]["image"])}
    body.update(fields.get("extra") or {})
    return body
