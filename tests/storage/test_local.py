"""The local store writes atomically and never leaves a partial file under an id."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import InvalidId, NotFound, StorageFull
from app.storage.ids import is_valid_id, new_id
from app.storage.local import LocalImageStore


async def test_put_get_exists(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    await store.open()
    image_id = new_id()
    assert not await store.exists(image_id)
    await store.put(image_id, b"png-bytes", {})
    assert await store.get(image_id) == b"png-bytes"
    assert await store.exists(image_id)
    assert [p.name for p in tmp_path.iterdir()] == [f"{image_id}.png"]


async def test_unknown_and_malformed_ids(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    await store.open()
    with pytest.raises(NotFound):
        await store.get(new_id())
    for bad in ["../x", "", "0" * 32 + "\n", "G" * 32]:
        with pytest.raises(InvalidId):
            await store.get(bad)


async def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalImageStore(tmp_path)
    await store.open()

    def disk_full(fd: int) -> None:  # fault injection: the device fills up at fsync
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("app.storage.local.os.fsync", disk_full)
    image_id = new_id()
    with pytest.raises(StorageFull):
        await store.put(image_id, b"x" * 1000, {})
    assert list(tmp_path.iterdir()) == []


async def test_open_sweeps_leftovers_from_a_crash(tmp_path: Path) -> None:
    (tmp_path / ".tmp-abc123").write_bytes(b"half a png")
    keep = tmp_path / (new_id() + ".png")
    keep.write_bytes(b"whole")
    await LocalImageStore(tmp_path).open()
    assert list(tmp_path.iterdir()) == [keep]


def test_ids() -> None:
    assert is_valid_id(new_id()) and new_id() != new_id()
    assert not is_valid_id("0" * 32 + "\n")
