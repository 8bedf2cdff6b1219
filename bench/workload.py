"""The one workload: the tiny model, 256x256, 4 steps, guidance 5, one prompt, a fresh seed per image."""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from pathlib import Path
from typing import Any

SIZE = 256
STEPS = 4
GUIDANCE = 5.0
PROMPT = "a lighthouse at dusk, oil painting"


def request_body(seed: int) -> dict[str, Any]:
    """POST /generate: every parameter explicit, so a change of the service's defaults cannot move the numbers."""
    return {
        "prompt": PROMPT,
        "seed": seed,
        "width": SIZE,
        "height": SIZE,
        "num_inference_steps": STEPS,
        "guidance_scale": GUIDANCE,
    }


class Seeds:
    """Distinct, reproducible seeds for the whole run (thread-safe)."""

    def __init__(self, start: int = 1000) -> None:
        self._count = itertools.count(start)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._count)

    def take(self, n: int) -> list[int]:
        with self._lock:
            return [next(self._count) for _ in range(n)]


class BarePipeline:
    """diffusers' StableDiffusionXLPipeline on the tiny base, called directly: no queue, HTTP, PNG or store."""

    def __init__(self, base_dir: Path) -> None:
        import diffusers as _diffusers
        import transformers as _transformers

        # Untyped libraries: Any-typed handles instead of an ignore per call.
        diffusers: Any = _diffusers
        transformers: Any = _transformers
        for library in (diffusers, transformers):  # no progress bars or load chatter in the report
            library.utils.logging.set_verbosity_error()
            library.utils.logging.disable_progress_bar()
        self.pipe: Any = diffusers.StableDiffusionXLPipeline.from_pretrained(str(base_dir), add_watermarker=False)
        self.pipe.set_progress_bar_config(disable=True)

    def __call__(self, seeds: list[int]) -> list[Any]:
        """One pipeline call for len(seeds) images: a prompt list and one seeded CPU generator per image."""
        import torch

        out = self.pipe(
            prompt=[PROMPT] * len(seeds),
            width=SIZE,
            height=SIZE,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            generator=[torch.Generator(device="cpu").manual_seed(s) for s in seeds],
            output_type="pil",
        )
        images: list[Any] = out.images
        return images


def watermark_ms(image: Any, repeats: int) -> float:
    """Median cost of the invisible watermark on one image (the servers run with it off; this is what it adds)."""
    from app.engine.images.watermark import apply_watermark

    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        apply_watermark(image)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)
