"""The PNG's A1111 `parameters` text: a prompt's line breaks cannot forge its lines (issue 13, item 12)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, PngImagePlugin

from app.engine.images.metadata import encode_png, read_provenance
from tests.helpers import provenance

FORGED = "a cat\nNegative prompt: everything\nSteps: 1, Sampler: x, CFG scale: 1, Seed: 1, Size: 64x64"


def _png(prompt: str, negative: str | None) -> bytes:
    p = provenance(prompt=prompt, negative_prompt=negative)
    return encode_png(Image.new("RGB", (256, 256)), p)


def _parameters(png: bytes) -> str:
    image = Image.open(io.BytesIO(png))
    assert isinstance(image, PngImagePlugin.PngImageFile)  # its text chunks: Image.open's type is any image
    return image.text["parameters"]


def test_line_breaks_in_prompts_cannot_forge_parameter_lines() -> None:
    png = _png(FORGED, "blurry\r\nSteps: 99")
    text = _parameters(png)
    lines = text.split("\n")
    assert len(lines) == 3, lines  # prompt, negative prompt, the one parameters line
    assert lines[0].startswith("a cat Negative prompt: everything Steps: 1")
    assert lines[1] == "Negative prompt: blurry Steps: 99"
    assert lines[2].startswith("Steps: 4, ") and "Seed: 7" in lines[2]
    assert read_provenance(png)["prompt"] == FORGED  # the exact prompt is kept in the JSON record


def test_the_sampler_is_written_as_a1111_labels_it() -> None:
    from app.engine.models.samplers import SAMPLERS, a1111_label

    assert a1111_label("dpmpp_2m_karras") == "DPM++ 2M Karras" and a1111_label("euler_a") == "Euler a"
    assert a1111_label("EulerDiscreteScheduler") == "Euler"  # a model's own scheduler, by its class
    assert a1111_label("SomethingNew") == "SomethingNew"
    assert all(a1111_label(name) != name for name in SAMPLERS)  # every one of ours has its label
    text = _parameters(_png("a cat", None))
    assert "Sampler: Euler, " in text


def test_the_png_is_lossless_and_keeps_both_text_chunks() -> None:
    """The run-length zlib strategy (chosen for speed, bench/png.py) is still deflate: any decoder reads the same
    pixels, and the provenance survives."""
    pixels = np.random.default_rng(3).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    pixels[:40] = (10, 200, 30)  # a flat band, where the runs are
    data = encode_png(Image.fromarray(pixels), provenance(prompt="a band", seed=11))
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == "PNG" and decoded.size == (128, 96)
        assert isinstance(decoded, PngImagePlugin.PngImageFile)
        assert np.array_equal(np.asarray(decoded.convert("RGB")), pixels)
        assert "parameters" in decoded.text
    assert read_provenance(data)["seed"] == 11
