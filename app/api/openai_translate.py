"""OpenAI's image vocabulary in our terms: model names, size presets, quality, response format, output format.

Pure functions over plain values, so the rules are tested without a server. The route applies them, then builds
the native request (whose limits hold for both APIs).

- Model: clients hard-code OpenAI's own names (`dall-e-2`, `dall-e-3`, `gpt-image-1`, ...). Those mean "the
  image model you serve": SDXL_OPENAI_MODEL, else the default model. A registry name picks that model; any other
  name is refused with the choices, as everywhere.
- Size: OpenAI's landscape and portrait presets (1792x1024, 1536x1024, ...) and `auto` are not sizes an SDXL model
  draws well; they become the model's nearest trained shape (SDXL's buckets, at the model's native area). Square
  presets and any other `WxH` are taken as they are (still checked against the limits).
- Quality: a share of the model's default steps (`low` half, `medium` three quarters, `high`/`hd` one and a half);
  explicit `steps` (extra_body) wins.
- Response format: OpenAI's own defaults, `b64_json` for gpt-image models and `url` for the others.
"""

from __future__ import annotations

import re

from app.schemas import MIN_SIDE

OPENAI_MODEL = re.compile(r"^(dall-e-[0-9]|gpt-image-[0-9a-z.-]+|chatgpt-image-[0-9a-z.-]+)$")

# SDXL's trained aspect buckets at 1024² (its paper, appendix I): width / height.
SDXL_BUCKETS = ((1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216), (1344, 768), (768, 1344))
SNAPPED_PRESETS = ("1792x1024", "1024x1792", "1536x1024", "1024x1536", "auto")

QUALITY_SHARE = {"low": 0.5, "medium": 0.75, "standard": 1.0, "auto": 1.0, "high": 1.5, "hd": 1.5}


def model_for(name: str | None, registry_names: list[str], openai_model: str | None) -> str | None:
    """The registry model a request names: None is the default; OpenAI's names are `openai_model` (None: the
    default); anything else is passed on (and refused there if it is not a registry name)."""
    if name is None or name in registry_names:
        return name
    if OPENAI_MODEL.fullmatch(name):
        return openai_model
    return name


def is_gpt_image(name: str | None) -> bool:
    return name is not None and name.startswith(("gpt-image-", "chatgpt-image-"))


def response_format_for(requested: str | None, model: str | None) -> str:
    return requested or ("b64_json" if is_gpt_image(model) else "url")


def size_for(size: str | None, native: int) -> tuple[int, int] | None:
    """(width, height), or None for the model's native square. Presets snap to the nearest bucket, scaled to the
    model's native area (a 512-pixel model's 1792x1024 is 672x384), in multiples of 8, the short side at least
    MIN_SIDE (a 256-pixel model's is 448x256)."""
    if size is None:
        return None
    if size in SNAPPED_PRESETS:
        if size == "auto":
            return None
        width, height = (int(v) for v in size.split("x"))
        aspect = width / height
        bucket = min(SDXL_BUCKETS, key=lambda b: abs(b[0] / b[1] - aspect))
        # At the model's native area; a small model's short side still at least the API's smallest side.
        scale = max(native / 1024, MIN_SIDE / min(bucket))
        return _scaled(bucket[0], scale), _scaled(bucket[1], scale)
    match = re.fullmatch(r"([0-9]+)x([0-9]+)", size)
    if match is None:  # the schema's pattern lets only these through
        raise ValueError(f"not a size: {size!r}")
    return int(match[1]), int(match[2])


def _scaled(side: int, scale: float) -> int:
    return round(side * scale / 8) * 8


def steps_for(quality: str | None, default_steps: int, max_steps: int) -> int | None:
    """Steps for a quality word; None: the model's default (an unknown or absent quality)."""
    share = QUALITY_SHARE.get(quality or "")
    if share is None or share == 1.0:
        return None
    return min(max_steps, max(1, round(default_steps * share)))
