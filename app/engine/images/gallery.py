"""A page of stored images with each one's provenance, read from the start of its PNG.

The provenance chunk is written before the pixels (`png.encode_png`), so only the first 64 KiB of each PNG are
read (a Range GET on S3): a page of 100 images reads at most 6.4 MB, not 100 whole 1024² PNGs. A chunk that does not
fit there (four 2,000-character prompts of 4-byte characters) costs one whole read of that image.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

from PIL import Image, UnidentifiedImageError

from app.engine.images.metadata import METADATA_KEY, text_chunks
from app.errors import NotFound
from app.storage.base import ImageStore

HEAD_BYTES = 64 * 1024
_READS_AT_ONCE = 8  # a page's reads overlap, without a hundred at once against one store


async def gallery_page(store: ImageStore, limit: int, cursor: str | None) -> dict[str, Any]:
    page = await store.list_images(limit, cursor)
    slots = asyncio.Semaphore(_READS_AT_ONCE)

    async def described(image_id: str) -> dict[str, Any] | NotFound | None:
        async with slots:
            try:
                return await _provenance(store, image_id)
            except NotFound as gone:  # deleted since the listing
                return gone

    found = await asyncio.gather(*(described(image.id) for image in page.images))
    images = [
        {"id": image.id, "created": image.created, "size": image.size, "provenance": provenance}
        for image, provenance in zip(page.images, found, strict=True)
        if not isinstance(provenance, NotFound)
    ]
    return {"images": images, "next_cursor": page.next_cursor}


async def _provenance(store: ImageStore, image_id: str) -> dict[str, Any] | None:
    head = await store.read_start(image_id, HEAD_BYTES)
    record = await asyncio.to_thread(_parse, head)
    if record is None and len(head) == HEAD_BYTES:  # the chunk may lie beyond the first bytes
        record = await asyncio.to_thread(_parse, await store.get(image_id))
    return record


def _parse(png: bytes) -> dict[str, Any] | None:
    """The `sdxl-serve` record from a PNG's header chunks (no pixel is decoded), or None where there is none."""
    try:
        with Image.open(io.BytesIO(png)) as image:
            text = text_chunks(image).get(METADATA_KEY)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):  # not a PNG, or cut inside a chunk
        return None
    if text is None:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
