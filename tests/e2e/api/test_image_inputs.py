"""Hostile image inputs (img2img, inpaint masks, ControlNet images): a clear 4xx, fast, with bounded memory."""

from __future__ import annotations

import base64
import io
import os
import struct
import time
import zlib
from typing import Any

import httpx
import psutil
import pytest
from PIL import Image

from app.engine.images.inputs import decode_base64, open_image
from app.errors import InvalidRequest
from tests.helpers import assert_error


def _encode(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _png_bomb(side: int) -> bytes:
    """A valid grayscale PNG of side x side zero pixels: ~1000x smaller than its decoded size."""
    raw = b"".join(b"\x00" + b"\x00" * side for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


GOOD = Image.new("RGB", (256, 256), (200, 30, 30))
HOSTILE: dict[str, bytes] = {
    "1x1 png": _encode(Image.new("RGB", (1, 1)), "PNG"),
    "tall sliver": _encode(Image.new("RGB", (16, 1024)), "PNG"),
    "truncated png": _encode(GOOD, "PNG")[:400],
    "truncated jpeg": _encode(GOOD, "JPEG")[:300],
    "png header only": _encode(GOOD, "PNG")[:33],
    "gif": _encode(GOOD, "GIF"),
    "bmp": _encode(GOOD, "BMP"),
    "tiff": _encode(GOOD, "TIFF"),
    "ico": _encode(GOOD, "ICO"),
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256"><rect width="9" height="9"/></svg>',
    "empty": b"",
    "text": b"hello world, not an image",
    "png, corrupt IHDR crc": _encode(GOOD, "PNG")[:29] + b"\x00\x00\x00\x00" + _encode(GOOD, "PNG")[33:],
}


@pytest.mark.parametrize("data", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_files_are_refused_with_a_field(data: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        open_image(data, "image", max_pixels=2048 * 2048, min_side=64)
    assert caught.value.field == "image"


def test_accepted_formats_decode() -> None:
    for fmt in ("PNG", "JPEG", "WEBP"):
        image = open_image(_encode(GOOD, fmt), "image", max_pixels=2048 * 2048, min_side=64)
        assert image.size == (256, 256) and image.mode == "RGB"
    mask = open_image(_encode(Image.new("RGBA", (256, 256)), "PNG"), "mask", max_pixels=1 << 22, min_side=64, mode="L")
    assert mask.mode == "L"
    animated = io.BytesIO()
    GOOD.save(animated, format="PNG", save_all=True, append_images=[Image.new("RGB", (256, 256))])
    assert open_image(animated.getvalue(), "image", max_pixels=1 << 22, min_side=64).getpixel((0, 0)) == (200, 30, 30)


@pytest.mark.parametrize("side", [6_000, 20_000])
def test_a_decompression_bomb_is_refused_from_its_header(side: int) -> None:
    """36 MP: under Pillow's own bomb limit, so only our header check stands in the way; 400 MP: over both."""
    bomb = _png_bomb(side)
    assert len(bomb) < 1_000_000
    started = time.perf_counter()
    with pytest.raises(InvalidRequest, match="at most"):
        open_image(bomb, "image", max_pixels=2048 * 2048, min_side=64)
    assert time.perf_counter() - started < 0.5  # the header is read; not one row is inflated


def test_base64_is_checked_before_decoding() -> None:
    with pytest.raises(InvalidRequest, match="base64"):
        decode_base64("not base64!!", "image", 1000)
    with pytest.raises(InvalidRequest, match="larger than"):
        decode_base64("A" * 4000, "image", 1000)
    assert decode_base64("data:image/png;base64," + base64.b64encode(b"abc").decode(), "image", 1000) == b"abc"


@pytest.mark.parametrize("size", [3 * 512 * 1024, 3 * 512 * 1024 + 1, 3 * 512 * 1024 + 2, 2_000_001])
def test_base64_decoded_in_slices_is_the_whole_decode(size: int) -> None:
    data = os.urandom(size)
    text = base64.b64encode(data).decode()
    assert decode_base64(text, "image", 4 * size) == data == base64.b64decode(text)


def test_padding_inside_the_text_is_refused_across_slices() -> None:
    early = base64.b64encode(b"ab").decode()  # "YWI=": padding, then more data in the next slice
    text = "A" * (512 * 1024 - 4) + early + "AAAA"
    with pytest.raises(InvalidRequest, match="base64"):
        decode_base64(text, "image", len(text))


def test_hostile_inputs_over_http(client: httpx.Client) -> None:
    process = psutil.Process()
    rss_before = process.memory_info().rss
    bomb = base64.b64encode(_png_bomb(6_000)).decode()  # under Pillow's limit: our check refuses it
    started = time.perf_counter()
    r = client.post("/img2img", json={"prompt": "x", "image": bomb})
    assert time.perf_counter() - started < 5
    error = assert_error(r, 422, "invalid_request", "image")
    assert "at most" in error["message"]
    assert process.memory_info().rss - rss_before < 200 * 1024 * 1024  # the 400 MP bitmap was never built

    good = base64.b64encode(_encode(GOOD, "PNG")).decode()
    for name in ("1x1 png", "truncated png", "gif", "svg"):
        data = base64.b64encode(HOSTILE[name]).decode()
        assert_error(client.post("/img2img", json={"prompt": "x", "image": data}), 422, "invalid_request", "image")
        body: dict[str, Any] = {"prompt": "x", "image": good, "mask": data}
        assert_error(client.post("/inpaint", json=body), 422, "invalid_request", "mask")
        body = {"prompt": "x", "controlnet": {"name": "tiny-controlnet", "image": data}}
        assert_error(client.post("/generate", json=body), 422, "invalid_request", "controlnet.image")
    assert client.get("/health").status_code == 200
