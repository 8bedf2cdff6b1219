"""`python -m bench.png`: the PNG encoder's cost and size, side by side on four kinds of picture: Pillow at zlib
level 6 (what the service first used), Pillow with zlib's Z_RLE strategy (what it used next), and what it uses now,
OpenCV's libpng with the Paeth filter on every row and Z_RLE (`app.engine.images.png.encode_pixels`).

Nothing is downloaded: the tiny model's output (256², noise-like, the benchmark's workload), a photo (matplotlib's
512x600 sample, decoded from its JPEG), a smooth 1024² picture with noise (bench.workload.smooth_picture, which
bench.encoding encodes too), and a flat 1024² graphic (solid shapes on a plain background, the case RLE is worst
at). CPU time is this process's, median of a few encodes; every encoding is decoded back and compared, so a lossy
path cannot win.
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

from app.engine.images.png import encode_pixels
from bench.workload import smooth_picture


def _pillow(**options: int) -> Callable[[Image.Image], bytes]:
    def encode(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", **options)
        return buffer.getvalue()

    return encode


ENCODERS: dict[str, Callable[[Image.Image], bytes]] = {
    "Pillow level 6 (first)": _pillow(compress_level=6),
    "Pillow Z_RLE (before)": _pillow(compress_level=6, compress_type=zlib.Z_RLE),
    "OpenCV Paeth Z_RLE (now)": encode_pixels,
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


def photo() -> Image.Image:
    from matplotlib import cbook  # a bench requirement (requirements-bench.txt)

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as file:
        return file.convert("RGB")


def measure(image: Image.Image, label: str, repeats: int) -> tuple[float, int]:
    """(median CPU ms, bytes)."""
    times, data = [], b""
    for _ in range(repeats):
        started = time.process_time()
        data = ENCODERS[label](image)
        times.append((time.process_time() - started) * 1000)
    if not np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), np.asarray(image)):
        raise AssertionError(f"{label} did not decode to the same pixels")
    return statistics.median(times), len(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.png", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="side of the photo-like and flat pictures")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-tiny", action="store_true", help="skip the tiny model's output (no model build)")
    args = parser.parse_args(argv)
    pictures: dict[str, Callable[[], Image.Image]] = {
        "photo 512x600": photo,
        f"smooth with noise {args.size}²": lambda: smooth_picture(args.size),
        f"flat graphic {args.size}²": lambda: flat_graphic(args.size),
    }
    if not args.no_tiny:
        pictures = {"tiny model output 256²": tiny_output, **pictures}
    print(f"{'picture':<24} {'encoder':<26} {'CPU ms':>7} {'KiB':>6} {'ms ÷ first':>11} {'size ÷ first':>13}")
    for name, make in pictures.items():
        image = make()
        first: tuple[float, int] | None = None
        for label in ENCODERS:
            ms, size = measure(image, label, args.repeats)
            first = first or (ms, size)
            print(f"{name:<24} {label:<26} {ms:7.1f} {size / 1024:6.0f} {ms / first[0]:11.2f} {size / first[1]:13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
