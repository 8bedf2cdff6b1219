"""Decoding images that come from requests (img2img / inpaint inputs, masks, ControlNet images), safely.

The order matters: the base64 text is size-checked before decoding, the format is identified from the header
(PNG, JPEG and WebP only, so none of Pillow's other, less-trodden decoders ever runs on request data), and the
pixel count is checked from the header before any pixel is decoded. A decompression bomb therefore costs a
header parse, not gigabytes. Truncated or corrupt files fail the full decode and are answered 422 too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io

from PIL import Image, UnidentifiedImageError

from app.config import Settings
from app.engine.images.metadata import text_chunks
from app.errors import InvalidRequest, NotFound
from app.storage.base import ImageStore
from app.storage.ids import check_id

FORMATS = ("PNG", "JPEG", "WEBP")
# b64decode holds the GIL for its whole call (~115 ms for 16 MiB here), which stalls the event loop even from a
# thread; decoded in slices, the GIL changes hands between them. A multiple of 4 characters: slices decode alone.
_SLICE = 512 * 1024


def decode_base64(text: str, field: str, max_bytes: int) -> bytes:
    """Standard base64, with or without a `data:image/...;base64,` prefix."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    if len(text) * 3 // 4 > max_bytes:
        raise InvalidRequest(f"{field} is larger than {max_bytes} bytes", field=field)
    try:
        # Padding only at the end, as for the whole text: a slice must not end early.
        if text.find("=", 0, len(text) - 2) != -1:
            raise ValueError("padding before the end")
        return b"".join(base64.b64decode(text[i : i + _SLICE], validate=True) for i in range(0, len(text), _SLICE))
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{field} must be base64 (standard alphabet, padded)", field=field) from None


def open_image(data: bytes, field: str, *, max_pixels: int, min_side: int, mode: str = "RGB") -> Image.Image:
    """The first frame, fully decoded and converted to `mode`, or 422 naming `field` and what is allowed."""
    try:
        # Pillow's own bomb check (an error from ~179 MP) runs here; ours, against max_pixels, right after.
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:
        raise InvalidRequest(f"{field} has too many pixels; at most {max_pixels} are accepted", field=field) from None
    except UnidentifiedImageError:
        raise InvalidRequest(f"{field} must be a PNG, JPEG or WebP image", field=field) from None
    except (OSError, SyntaxError, ValueError):  # a header Pillow cannot parse, or a text chunk over its limit
        raise InvalidRequest(f"{field} could not be read as an image (corrupt header)", field=field) from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise InvalidRequest(f"{field} is {width}x{height}; at most {max_pixels} pixels are accepted", field=field)
        if min(width, height) < min_side:
            raise InvalidRequest(
                f"{field} is {width}x{height}; each side must be at least {min_side} pixels", field=field
            )
        try:
            image.seek(0)
            image.load()
            return image.convert(mode)
        except (OSError, SyntaxError, ValueError, EOFError):
            raise InvalidRequest(f"{field} is truncated or corrupt", field=field) from None


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """The image at exactly width x height (a resize only when the size differs)."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.LANCZOS)


class Inputs:
    """A request's images, decoded off the event loop: base64 in the body, or a stored image by its id."""

    def __init__(self, settings: Settings, store: ImageStore):
        self.settings, self.store = settings, store

    async def upload(self, text: str, field: str, mode: str = "RGB") -> Image.Image:
        def decode() -> Image.Image:  # ~70 ms for 16 MiB of base64: not on the event loop
            return self._open(decode_base64(text, field, self.settings.max_upload_bytes), field, mode)

        return await asyncio.to_thread(decode)

    async def image(self, text: str | None, image_id: str | None, field: str, mode: str = "RGB") -> Image.Image:
        """`field` as base64, or `{field}_id` from the store: the schema asks for exactly one."""
        if text is not None:
            return await self.upload(text, field, mode)
        assert image_id is not None
        try:
            data = await self.store.get(check_id(image_id))
        except NotFound as exc:
            raise NotFound(exc.message, field=f"{field}_id") from None
        return await asyncio.to_thread(self._open, data, f"{field}_id", mode)

    async def text(self, data: str | bytes, field: str) -> dict[str, str]:
        """An image's text chunks: of an upload (base64, checked like every upload) or of one of our own PNGs."""

        def read() -> dict[str, str]:
            raw = data if isinstance(data, bytes) else decode_base64(data, field, self.settings.max_upload_bytes)
            try:
                with Image.open(io.BytesIO(raw), formats=FORMATS) as image:
                    return text_chunks(image)
            except Image.DecompressionBombError:  # Pillow refuses to open it, though no pixel would be decoded
                most = 2 * (Image.MAX_IMAGE_PIXELS or 0)  # Pillow's own error threshold
                raise InvalidRequest(f"{field} has too many pixels; at most {most} can be read", field=field) from None
            except UnidentifiedImageError:
                raise InvalidRequest(f"{field} must be a PNG, JPEG or WebP image", field=field) from None
            except (OSError, SyntaxError, ValueError):
                raise InvalidRequest(f"{field} could not be read as an image (corrupt header)", field=field) from None

        return await asyncio.to_thread(read)

    async def stored(self, image_id: str) -> Image.Image:
        """One of our own PNGs (to refine): trusted, so decoded without the upload checks."""
        return await asyncio.to_thread(_decode_png, await self.store.get(image_id))

    def _open(self, data: bytes, field: str, mode: str) -> Image.Image:
        return open_image(
            data, field, max_pixels=self.settings.max_pixels, min_side=self.settings.min_upload_side, mode=mode
        )


def _decode_png(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
