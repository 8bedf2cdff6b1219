"""Provenance carried inside every PNG (png.py writes it there).

Two text chunks: `parameters` in the AUTOMATIC1111 format (so existing tools read our images) and
`sdxl-serve`, a JSON record of everything needed to reproduce the image. Neither holds the image id or a
time: the same request with the same seed must give byte-identical files.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import metadata as importlib_metadata
from typing import Any

from PIL import Image

from app.engine.models.samplers import a1111_label

METADATA_KEY = "sdxl-serve"
_PACKAGES = ("sdxl-serve", "diffusers", "torch", "transformers")


@dataclass(frozen=True)
class Provenance:
    kind: str  # "generate" | "img2img" | "inpaint" | "refine"
    model: str
    prompt: str
    negative_prompt: str | None
    prompt_2: str | None
    negative_prompt_2: str | None
    seed: int
    steps: int
    guidance_scale: float
    width: int
    height: int
    scheduler: str
    watermark: bool
    strength: float | None = None
    parent_id: str | None = None
    loras: list[dict[str, Any]] = field(default_factory=list)
    vae: str | None = None
    controlnet: dict[str, Any] | None = None
    refine: dict[str, Any] | None = None


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def _one_line(text: str) -> str:
    """A1111's reader splits `parameters` into lines, so a prompt's own line breaks could forge a `Negative prompt:`
    or a `Steps: ...` line: they become spaces here (the exact prompt stays in the JSON provenance chunk)."""
    return " ".join(text.splitlines())


def a1111_parameters(p: Provenance) -> str:
    fields = [
        f"Steps: {p.steps}",
        f"Sampler: {a1111_label(p.scheduler)}",
        f"CFG scale: {p.guidance_scale:g}",
        f"Seed: {p.seed}",
        f"Size: {p.width}x{p.height}",
        f"Model: {p.model}",
    ]
    if p.strength is not None:
        fields.append(f"Denoising strength: {p.strength:g}")
    if p.vae:
        fields.append(f"VAE: {p.vae}")
    fields.append(f"Version: sdxl-serve {library_versions()['sdxl-serve']}")
    # A1111 names LoRAs inside the prompt; the same tags here let its tools show them.
    lines = [_one_line(p.prompt) + "".join(f" <lora:{lora['name']}:{lora['scale']:g}>" for lora in p.loras)]
    if p.negative_prompt:
        lines.append(f"Negative prompt: {_one_line(p.negative_prompt)}")
    lines.append(", ".join(fields))
    return "\n".join(lines)


def provenance_record(p: Provenance) -> dict[str, Any]:
    return {**asdict(p), "versions": library_versions()}


def text_chunks(image: Image.Image) -> dict[str, str]:
    """An opened image's text chunks (`parameters` among them), from its header: no pixel is decoded."""
    return {key: value for key, value in image.info.items() if isinstance(key, str) and isinstance(value, str)}


def read_provenance(png: bytes) -> dict[str, Any]:
    with Image.open(io.BytesIO(png)) as image:
        text = image.text  # type: ignore[attr-defined]
    record: dict[str, Any] = json.loads(text[METADATA_KEY])
    return record
