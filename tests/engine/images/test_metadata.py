"""The PNG's A1111 `parameters` text: a prompt's line breaks cannot forge its lines (issue 13, item 12)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from app.engine.images.metadata import read_provenance
from app.engine.images.png import encode_png
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
    """OpenCV's fixed filter and the run-length zlib strategy (chosen for speed, bench/png.py) are still PNG and
    deflate: any decoder reads the same pixels, and the provenance survives."""
    pixels = np.random.default_rng(3).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    pixels[:40] = (10, 200, 30)  # a flat band, where the runs are
    data = encode_png(Image.fromarray(pixels), provenance(prompt="a band", seed=11))
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == "PNG" and decoded.size == (128, 96)
        assert isinstance(decoded, PngImagePlugin.PngImageFile)
        assert np.array_equal(np.asarray(decoded.convert("RGB")), pixels)
        assert "parameters" in decoded.text
    assert read_provenance(data)["seed"] == 11


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = [], 8
    while i < len(png):
        (length,) = struct.unpack(">I", png[i : i + 4])
        cid, data = png[i + 4 : i + 8], png[i + 8 : i + 8 + length]
        assert struct.unpack(">I", png[i + 8 + length : i + 12 + length])[0] == zlib.crc32(cid + data)
        chunks.append((cid, data))
        i += 12 + length
    return chunks


def test_text_chunks_come_before_the_pixels_and_every_row_uses_the_paeth_filter() -> None:
    """The gallery reads provenance from a PNG's first 64 KiB, so both text chunks precede IDAT. Each row's filter
    byte is Paeth's (4): an OpenCV that ignored the filter flag would use its default (Sub, 1, in OpenCV 5.0)."""
    width, height = 40, 30
    pixels = np.random.default_rng(5).integers(0, 256, (height, width, 3), dtype=np.uint8)
    png = encode_png(Image.fromarray(pixels), provenance(prompt="ein Bär — 熊", seed=4))
    chunks = _chunks(png)
    kinds = [cid for cid, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    first_pixels = kinds.index(b"IDAT")
    assert sorted(data.split(b"\0")[0] for cid, data in chunks[:first_pixels] if cid in (b"tEXt", b"iTXt")) == [
        b"parameters",
        b"sdxl-serve",
    ]
    raw = zlib.decompress(b"".join(data for cid, data in chunks if cid == b"IDAT"))
    stride = 1 + width * 3
    assert len(raw) == height * stride
    assert {raw[row * stride] for row in range(height)} == {4}
    with Image.open(io.BytesIO(png)) as decoded:
        assert isinstance(decoded, PngImagePlugin.PngImageFile)
        assert decoded.text["parameters"].startswith("ein Bär — 熊\n")  # not Latin-1: Pillow wrote it as iTXt
        assert np.array_equal(np.asarray(decoded), pixels)
    assert read_provenance(png)["prompt"] == "ein Bär — 熊"


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "I;16"])
def test_every_mode_is_stored_as_it_is_and_losslessly(mode: str) -> None:
    """RGB, RGBA and grey go through OpenCV (channel order and alpha checked here); any other mode through Pillow's
    encoder, which keeps it as it is: 16-bit grey above 255, a palette with its transparency, grey with alpha."""
    rng = np.random.default_rng(6)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (12, 20), dtype=np.uint16))
        assert image.mode == "I;16" and np.asarray(image).max() > 255
    else:
        image = Image.fromarray(rng.integers(0, 256, (12, 20, 4), dtype=np.uint8), "RGBA").convert(mode)
    if mode == "P":
        image.info["transparency"] = 3
    png = encode_png(image, provenance())
    with Image.open(io.BytesIO(png)) as decoded:
        assert decoded.mode == mode
        assert np.array_equal(np.asarray(decoded), np.asarray(image))
        assert decoded.info.get("transparency") == image.info.get("transparency")
        if mode == "P":
            assert decoded.getpalette() == image.getpalette()
        assert isinstance(decoded, PngImagePlugin.PngImageFile) and "parameters" in decoded.text


def test_the_same_image_and_provenance_give_the_same_bytes() -> None:
    pixels = np.random.default_rng(7).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    first = encode_png(Image.fromarray(pixels), provenance(seed=9))
    assert encode_png(Image.fromarray(pixels.copy()), provenance(seed=9)) == first
