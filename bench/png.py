"""`python -m bench.png`: the PNG encoder's cost and size, zlib level 6 (PIL's default strategy, what the service
used before) against the Z_RLE strategy it uses now, side by side on three kinds of picture.

Pictures are made here, so that nothing is downloaded: the tiny model's output (256², noise-like, the benchmark's
workload), a smooth 1024² picture with noise (bench.workload.smooth_picture, which bench.encoding encodes too; closer
to what SDXL makes than either extreme), and a flat 1024² graphic (solid shapes on a plain background, the case RLE
is worst at). CPU time is this process's, median of a few encodes; every encoding is decoded back and compared, so
a lossy path cannot win.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from bench.workload import smooth_picture

STRATEGIES: dict[str, dict[str, int]] = {
    "level 6 (before)": {"compress_level": 6},
    "Z_RLE (now)": {"compress_level": 6, "compress_type": zlib.Z_RLE},
}


def flat_graphic(size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), (245, 240, 230))
    draw = ImageDraw.Draw(image)
    for i in range(12):
        x, y = (i * 97) % (size - 200), (i * 193) % (size - 200)
        draw.ellipse((x, y, x + 180, y + 180), fill=(40 + 17 * i, 90, 200 - 11 * i))
        draw.rectangle((y, x, y + 120, x + 60), fill=(200, 60 + 13 * i, 40))
    return image


def tiny_output() -> Image.Image:
    from app.config import Settings
    from app.engine.models.tiny.build import ensure_tiny_models
    from bench.workload import BarePipeline, Seeds

    bare = BarePipeline(ensure_tiny_models(Settings(model="tiny").cache_dir).base)
    picture: Image.Image = bare(Seeds().take(1))[0].convert("RGB")
    return picture


def measure(image: Image.Image, options: dict[str, int], repeats: int) -> tuple[float, int]:
    """(median CPU ms, bytes)."""
    times, data = [], b""
    for _ in range(repeats):
        buffer = io.BytesIO()
        started = time.process_time()
        image.save(buffer, format="PNG", **options)
        times.append((time.process_time() - started) * 1000)
        data = buffer.getvalue()
    if not np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), np.asarray(image)):
        raise AssertionError(f"{options} did not decode to the same pixels")
    return statistics.median(times), len(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.png", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="side of the photo-like and flat pictures")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-tiny", action="store_true", help="skip the tiny model's output (no model build)")
    args = parser.parse_args(argv)
    pictures: dict[str, Callable[[], Image.Image]] = {
        f"smooth with noise {args.size}²": lambda: smooth_picture(args.size),
        f"flat graphic {args.size}²": lambda: flat_graphic(args.size),
    }
    if not args.no_tiny:
        pictures = {"tiny model output 256²": tiny_output, **pictures}
    print(f"{'picture':<26} {'encoder':<18} {'CPU ms':>8} {'KiB':>8} {'ms ÷ before':>12} {'size ÷ before':>14}")
    for name, make in pictures.items():
        image = make()
        before: tuple[float, int] | None = None
        for label, options in STRATEGIES.items():
            ms, size = measure(image, options, args.repeats)
            before = before or (ms, size)
            print(
                f"{name:<26} {label:<18} {ms:8.1f} {size / 1024:8.0f} {ms / before[0]:12.2f} {size / before[1]:14.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
