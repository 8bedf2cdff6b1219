"""Schedulers ("samplers") by name, built per call from the model's own scheduler config.

A scheduler object holds per-run state (its timesteps), so one is built for each pipeline call on the GPU
owner's thread and never assigned to a pipeline other requests use. Names follow AUTOMATIC1111's labels
(accepted too, case-insensitively) mapped onto diffusers' classes.
"""

from __future__ import annotations

from typing import Any

from app.errors import InvalidRequest

# name -> (diffusers class, options); A1111 label in the comment.
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),  # Euler
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),  # Euler a
    "heun": ("HeunDiscreteScheduler", {}),  # Heun
    "dpmpp_2m": (  # DPM++ 2M
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False},
    ),
    "dpmpp_2m_karras": (  # DPM++ 2M Karras
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
    ),
    "ddim": ("DDIMScheduler", {}),  # DDIM
    "unipc": ("UniPCMultistepScheduler", {}),  # UniPC
    # For few-step models (LCM-distilled, or any model with an LCM LoRA such as latent-consistency/lcm-lora-sdxl):
    # 2-8 steps, guidance 1-2 or off (params.py holds the rule).
    "lcm": ("LCMScheduler", {}),  # LCM
}
# Model evaluations per denoising step, where not 1: Heun evaluates the UNet twice a step (2N - 1 for N steps).
EVALUATIONS_PER_STEP = {"heun": 2}
LCM_MAX_GUIDANCE = 2.0
LCM_MAX_STEPS = 50  # LCMScheduler's original_inference_steps: it refuses more
_LABELS = {
    "euler a": "euler_a",
    "dpm++ 2m": "dpmpp_2m",
    "dpm++ 2m karras": "dpmpp_2m_karras",
}
# What A1111 calls each, for the `Sampler:` of a PNG's parameters text (its tools, and civitai, read that label).
A1111_LABELS = {
    "euler": "Euler",
    "euler_a": "Euler a",
    "heun": "Heun",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_karras": "DPM++ 2M Karras",
    "ddim": "DDIM",
    "unipc": "UniPC",
    "lcm": "LCM",
}
# A model's own scheduler (no `scheduler` asked for) is known by its class.
_CLASS_LABELS = {
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "HeunDiscreteScheduler": "Heun",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DDIMScheduler": "DDIM",
    "UniPCMultistepScheduler": "UniPC",
    "LCMScheduler": "LCM",
}


def a1111_label(name: str) -> str:
    """A1111's label for one of our names or a diffusers scheduler class; anything else as it is."""
    return A1111_LABELS.get(name) or _CLASS_LABELS.get(name) or name


def canonical(name: str, field_name: str = "scheduler") -> str:
    key = name.strip().lower()
    key = _LABELS.get(key, key.replace(" ", "_").replace("-", "_"))
    if key not in SAMPLERS:
        raise InvalidRequest(f"unknown scheduler {name!r}; choose one of: {', '.join(SAMPLERS)}", field=field_name)
    return key


def build(name: str, config: Any) -> Any:
    """A fresh scheduler of the named kind, from a pipeline's scheduler config (owner thread)."""
    import diffusers

    class_name, options = SAMPLERS[name]
    cls = getattr(diffusers, class_name)
    return cls.from_config(config, **options)
