"""The workload: by default (the CPU suite) the tiny model, 256x256, 4 steps, guidance 5, one prompt, a fresh seed
per image; `python -m bench --full-size` runs another `Workload` (1024², 30 steps) on another device."""

from __future__ import annotations

import itertools
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIZE = 256
STEPS = 4
GUIDANCE = 5.0
PROMPT = "a lighthouse at dusk, oil painting"


@dataclass(frozen=True)
class Workload:
    """What every timed image is: square `size` pixels, `steps` steps, classifier-free guidance `guidance`."""

    size: int = SIZE
    steps: int = STEPS
    guidance: float = GUIDANCE
    prompt: str = PROMPT


CPU = Workload()  # the CPU suite's, unchanged since its first tables


def request_body(seed: int, workload: Workload = CPU) -> dict[str, Any]:
    """POST /generate: every parameter explicit, so a change of the service's defaults cannot move the numbers."""
    return {
        "prompt": workload.prompt,
        "seed": seed,
        "width": workload.size,
        "height": workload.size,
        "num_inference_steps": workload.steps,
        "guidance_scale": workload.guidance,
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


def quiet_libraries() -> None:
    """No progress bars or load chatter from diffusers and transformers in the report."""
    import diffusers
    import transformers

    for library in (diffusers, transformers):
        logging: Any = library.utils.logging  # untyped: one Any-typed handle instead of an ignore per call
        logging.set_verbosity_error()
        logging.disable_progress_bar()


class BarePipeline:
    """diffusers' StableDiffusionXLPipeline called directly: no queue, HTTP, PNG or store. Loaded from a
    directory (the tiny base), or wrapped around a pipeline already built (`BarePipeline.of`)."""

    def __init__(self, base_dir: Path, workload: Workload = CPU, device: str = "cpu", dtype: str = "float32") -> None:
        import diffusers as _diffusers
        import torch

        diffusers: Any = _diffusers  # untyped
        quiet_libraries()
        pipe: Any = diffusers.StableDiffusionXLPipeline.from_pretrained(
            str(base_dir), add_watermarker=False, dtype=getattr(torch, dtype)
        )
        self._setup(pipe.to(device), workload)

    @classmethod
    def of(cls, pipe: Any, workload: Workload) -> BarePipeline:
        bare = cls.__new__(cls)
        bare._setup(pipe, workload)
        return bare

    def _setup(self, pipe: Any, workload: Workload) -> None:
        self.pipe: Any = pipe
        self.workload = workload
        self.pipe.set_progress_bar_config(disable=True)

    def __call__(self, seeds: list[int]) -> list[Any]:
        """One pipeline call for len(seeds) images: a prompt list and one seeded CPU generator per image (as the
        service seeds them; diffusers draws the noise on the CPU and moves it, so a seed is one image anywhere)."""
        import torch

        w = self.workload
        out = self.pipe(
            prompt=[w.prompt] * len(seeds),
            width=w.size,
            height=w.size,
            num_inference_steps=w.steps,
            guidance_scale=w.guidance,
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


def smooth_picture(side: int) -> Any:
    """A side² RGB picture: gradients with noise, closer to a generated image than pure noise (which PNG cannot
    compress at all). What bench.encoding and bench.png encode."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:side, 0:side]
    base = np.stack([x * 255 // side, y * 255 // side, (x + y) * 127 // side], axis=-1)
    noise = np.random.default_rng(0).integers(0, 24, (side, side, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def say(message: str) -> None:
    """A progress line: stderr, so that stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)
