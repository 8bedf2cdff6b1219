"""Example values for the request models, so that /docs' "Try it out" bodies run as they are (issue 15).

They name no model, scheduler, VAE, LoRA or ControlNet, so they run on whichever model a server serves (the defaults
fill in); the two images are 256x256 PNGs (a sky, a sun and a field; a mask whose white square is repainted), small
enough to sit in the schema. `app/api/openapi.py` adds examples for the nested LoRA and ControlNet references, which
must name an entry of the served model's family.
"""

from __future__ import annotations

from typing import Any

PROMPT = "a lighthouse at dusk, oil painting"
IMAGE_PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAQAAAAEACAIAAADTED8xAAACtklEQVR42u3cwbHBYBhAUUyKUYR1SrBQhJqsLJSgOhUEM4kM7jlr7y3++e73Jx"
    "a24/mygaqdI0AAIAAQAAgABAACAAGAAEAAIAAQAAgABAACAAGAAEAAIAAQAAgABAACAAGAAEAAIAAQAAgABAACAAGAAEAAIAAQAAgABAACgHkG"
    "R7Cy2+n+/APH6+iUBNAa+qkPi0EAodGf+nMZCCA3+jIQgNGXwcf5Fug3pn+1/y8Avn06NeARKDr6HofcAKbfVSAA068BAYAA0uvfJSAAk6cBAZ"
    "g5DQgABJBety4BAYAAwovWJSAAEEB4xboEBAACAAGAAHKP114DBAACAAGAAEAAIAAQAAgABIAAQAC84Vd+itBPJgoABAACAAGEHq+9AAgABJBc"
    "sda/AEAAyUVr/QsABJBct9a/ALozZ/oF0J080y8AEEByAVv/Aug2YPrnGxzBgrO42m8SGn03QPcqMP0C6DZg+j0CRR+HjL4AohkYfQFEMzD6Av"
    "i3F4OXMRh6AXhLZiW+BUIAIAAQAAgABAACAAGAAEAAIAAQAAgABAACAAGAAEAAIAAQAAgABAACAAGAAEAAIAAQAAgABAACAAGAAEAAIAAQAAgA"
    "BAACAAGAAEAAIAAQAAgABAACAAGAAEAAIAAQAAIAAYAAQAAgABAACAAEAAIAAYAAQAAgABAACAAEAAIAAYAAQADwzbb7w94p4AYAAYAAQAAgAB"
    "AACAAEAAIAAYAAQAAgABAACAAEAAIAAYAAQAAgABAACAAEAAIAAYAAQAAgABAACAAEAAIAAYAAQAAgABAACAAEAAIAAYAAQAAgABAACAAEAAIA"
    "ASAAR4AAQAAgABAACAAEAAIAAYAAQAAgABAACAAEAAIAAYAAQAAgABAACAAEAAIAAYAAQAAgABAACAAEAAIAAYAAQACwvAfeU3c5rVdBMgAAAA"
    "BJRU5ErkJggg=="
)
MASK_PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAQAAAAEACAAAAAB5Gfe6AAAA5ElEQVR42u3S0Q0AQAREQa7/ninC/YiZAjbxIgIAAAAAAAAAAAAAAAAAAADYLq"
    "cDtfyAd/0DBBBAAAEEEEAAAQQQQAABBBBAAAEEEEAAAQQQQAABBBBAAAEEEEAAAQQQQAABBBBAAAEEEEAAAQQQQAABBBBAAAEEEEAAAQQQQAAB"
    "BBBAAAEEEEAAAQQQQAABBBBAAAEEEEAAAQQQQAABBBBAAAEEEEAAAQQQQAABBBBAAAEEEEAAAQQQQAABBBBAAAEEEEAAAQQQQAABBBBAAAEEAA"
    "AAAAAAAAAAAAAAAAAAAPihAdIPAgALmR5EAAAAAElFTkSuQmCC"
)

GENERATE: dict[str, Any] = {"prompt": PROMPT, "negative_prompt": "blurry, low quality", "seed": 42, "num_images": 1}
IMG2IMG: dict[str, Any] = {"prompt": PROMPT, "image": IMAGE_PNG_B64, "strength": 0.6, "seed": 42}
INPAINT: dict[str, Any] = {"prompt": "a red sailing boat", "image": IMAGE_PNG_B64, "mask": MASK_PNG_B64, "seed": 42}
# The id is a placeholder: a refine needs an image this server stored (the `id` of a /generate answer).
REFINE: dict[str, Any] = {"id": "0" * 32, "prompt": f"{PROMPT}, detailed", "strength": 0.3, "seed": 42}
ENSEMBLE: dict[str, Any] = {"mode": "ensemble", "high_noise_frac": 0.8}
OPENAI_GENERATE: dict[str, Any] = {"prompt": PROMPT, "n": 1, "response_format": "url", "seed": 42}
A1111_TXT2IMG: dict[str, Any] = {"prompt": PROMPT, "negative_prompt": "blurry", "seed": 42, "sampler_name": "Euler a"}
A1111_IMG2IMG: dict[str, Any] = {"prompt": PROMPT, "init_images": [IMAGE_PNG_B64], "denoising_strength": 0.6}
A1111_PNG_INFO: dict[str, Any] = {"image": IMAGE_PNG_B64}

# The nested references name registry entries, which fit only models of their family (registry.py): by the family
# of the served default model. No LoRA ships for SDXL (they are the files in SDXL_LORA_DIR), so none is named there.
NESTED: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "LoraRef": {"name": "tiny-lora", "scale": 0.8},
        "ControlNetRef": {"name": "tiny-controlnet", "image": IMAGE_PNG_B64, "conditioning_scale": 0.8},
    },
    "sdxl": {"ControlNetRef": {"name": "canny-sdxl", "image": IMAGE_PNG_B64, "conditioning_scale": 0.8}},
}
