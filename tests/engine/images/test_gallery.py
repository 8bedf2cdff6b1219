"""gallery_page reads each image's provenance from the start of its PNG, whole only when the record lies further in,
and lists a PNG without one with null provenance."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from app.engine.images.gallery import HEAD_BYTES, gallery_page
from app.engine.images.metadata import read_provenance
from app.engine.images.png import encode_png
from app.storage.ids import new_id
from app.storage.local import LocalImageStore
from tests.helpers import provenance


def _png(prompt: str, size: int = 256) -> bytes:
    p = provenance(prompt=prompt, seed=3, width=size, height=size, scheduler="euler")
    noise = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)  # incompressible pixels
    return encode_png(Image.fromarray(noise), p)


class CountingStore(LocalImageStore):
    """The real local store, counting whole reads (not a fake: every call goes to the disk)."""

    whole_reads = 0

    async def get(self, image_id: str) -> bytes:
        self.whole_reads += 1
        return await super().get(image_id)


async def test_provenance_from_the_first_bytes_of_each_png(tmp_path: Path) -> None:
    store = CountingStore(tmp_path)
    await store.open()
    small, large = new_id(), new_id()
    await store.put(small, _png("a lighthouse"), {})
    big = _png("a castle", size=1024)
    assert len(big) > 10 * HEAD_BYTES  # a whole read would be far more than the head
    await store.put(large, big, {})
    page = await gallery_page(store, 10, None)
    found = {image["id"]: image for image in page["images"]}
    assert found[small]["provenance"]["prompt"] == "a lighthouse"
    assert found[large]["provenance"] == read_provenance(big)
    assert found[large]["size"] == len(big)
    assert store.whole_reads == 0


async def test_a_record_beyond_the_head_costs_one_whole_read(tmp_path: Path) -> None:
    store = CountingStore(tmp_path)
    await store.open()
    image_id = new_id()
    prompt = "é" * HEAD_BYTES  # 128 KiB of UTF-8: longer than the API allows, as an image from elsewhere may be
    await store.put(image_id, _png(prompt), {})
    page = await gallery_page(store, 10, None)
    assert page["images"][0]["provenance"]["prompt"] == prompt
    assert store.whole_reads == 1


async def test_a_png_without_provenance_is_listed_with_none(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    await store.open()
    image_id = new_id()
    plain = io.BytesIO()
    Image.new("RGB", (8, 8)).save(plain, format="PNG")
    await store.put(image_id, plain.getvalue(), {})
    page = await gallery_page(store, 10, None)
    assert page == {
        "images": [
            {"id": image_id, "created": page["images"][0]["created"], "size": len(plain.getvalue()), "provenance": None}
        ],
        "next_cursor": None,
    }
