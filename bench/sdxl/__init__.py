"""The real SDXL 1.0 architecture from its published configs (the JSON files beside this), with no weights.

`component(name)` instantiates one component on torch's current default device (`with torch.device(...)`:
`meta` for sizes without storage, as tests/sdxl_meta.py does; `cuda` for random weights initialised on the GPU,
as bench/full_size.py does). The configs live here, not under tests/, because the benchmark builds from them too.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).parent

COMPONENTS = ("unet", "refiner_unet", "vae", "controlnet", "text_encoder", "text_encoder_2")


@cache
def config(name: str) -> dict[str, Any]:
    """The component's config (a diffusers or transformers config dict)."""
    if name not in COMPONENTS:
        raise ValueError(f"unknown SDXL component {name!r}; one of {', '.join(COMPONENTS)}")
    data: dict[str, Any] = json.loads((CONFIGS / f"{name}.json").read_text())
    return data


def component(name: str) -> Any:
    """One real-size SDXL component (a torch.nn.Module), in torch's default dtype, on its default device."""
    import diffusers as _diffusers

    diffusers: Any = _diffusers  # untyped constructors: one Any-typed handle instead of an ignore per call
    cfg = config(name)
    if name in ("unet", "refiner_unet"):
        return diffusers.UNet2DConditionModel.from_config(cfg)
    if name == "vae":
        return diffusers.AutoencoderKL.from_config(cfg)
    if name == "controlnet":
        return diffusers.ControlNetModel.from_config(cfg)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    text_config = CLIPTextConfig.from_dict(cfg)
    cls = CLIPTextModel if name == "text_encoder" else CLIPTextModelWithProjection
    return cls(text_config)
