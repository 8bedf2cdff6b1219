"""Retention of the local store: a size cap that holds after every write (oldest images go first) and an age
limit enforced on a timer, so images expire even when nothing is written."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from app.config import Settings
from app.errors import StorageFull
from app.storage.factory import build_store
from app.storage.ids import new_id
from app.storage.local import LocalImageStore

KB = 1000


def _age(path: Path, seconds_ago: float) -> None:
    stamp = time.time() - seconds_ago
    os.utime(path, (stamp, stamp))


def _stored(root: Path) -> set[str]:
    return {p.stem for p in root.glob("*.png")}


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.glob("*.png"))


async def test_cap_holds_after_every_write_and_oldest_go_first(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path, max_bytes=3 * KB)
    await store.open()
    written: list[str] = []
    for i in range(6):
        image_id = new_id()
        await store.put(image_id, b"x" * KB, {})
        _age(store.path_for(image_id), 100 - i)  # distinct, increasing mtimes: clocks can be coarse
        written.append(image_id)
        assert _size(tmp_path) <= 3 * KB
        assert _stored(tmp_path) == set(written[-3:])


async def test_open_trims_an_existing_store_oldest_first(tmp_path: Path) -> None:
    ids = [new_id() for _ in range(4)]
    for i, image_id in enumerate(ids):
        (tmp_path / f"{image_id}.png").write_bytes(b"x" * KB)
        _age(tmp_path / f"{image_id}.png", 100 - i)
    await LocalImageStore(tmp_path, max_bytes=2 * KB).open()
    assert _stored(tmp_path) == set(ids[2:])


async def test_concurrent_writes_keep_the_cap(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path, max_bytes=5 * KB)
    await store.open()
    await asyncio.gather(*(store.put(new_id(), b"x" * KB, {}) for _ in range(30)))
    assert _size(tmp_path) <= 5 * KB
    assert len(_stored(tmp_path)) == 5  # and it does not evict more than it must


async def test_an_image_larger_than_the_cap_is_refused(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path, max_bytes=2 * KB)
    await store.open()
    kept = new_id()
    await store.put(kept, b"x" * KB, {})
    with pytest.raises(StorageFull, match="exceeds the store's cap"):
        await store.put(new_id(), b"x" * (3 * KB), {})
    assert _stored(tmp_path) == {kept}


async def test_age_limit_removes_old_images_without_any_write(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path, max_age_s=0.4)  # sweeps every 0.1 s
    await store.open()
    try:
        old, new = new_id(), new_id()
        await store.put(old, b"old", {})
        await store.put(new, b"new", {})
        record = f"jobs/{new_id()}.json"
        await store.put_record(record, b"{}")
        _age(store.path_for(old), 3600)
        _age(tmp_path / ".records" / record, 3600)
        deadline = time.monotonic() + 10
        # One sweep removes the image, then the record (a moment later): wait for both.
        aged = (store.path_for(old), tmp_path / ".records" / record)
        while any(p.exists() for p in aged) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert _stored(tmp_path) == {new}
        assert await store.get_record(record) is None  # records expire with the images they describe
    finally:
        await store.close()


async def test_open_removes_images_past_the_age_limit(tmp_path: Path) -> None:
    old, new = tmp_path / f"{new_id()}.png", tmp_path / f"{new_id()}.png"
    old.write_bytes(b"old")
    new.write_bytes(b"new")
    _age(old, 7200)
    store = LocalImageStore(tmp_path, max_age_s=3600)
    await store.open()
    await store.close()
    assert list(tmp_path.glob("*.png")) == [new]


async def test_failed_directory_fsync_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalImageStore(tmp_path)
    await store.open()
    real_fsync, calls = os.fsync, []

    def second_fsync_fails(fd: int) -> None:  # fault injection: the file lands, making its name durable fails
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr("app.storage.local.os.fsync", second_fsync_fails)
    with pytest.raises(StorageFull):
        await store.put(new_id(), b"x", {})
    assert list(tmp_path.iterdir()) == []


def test_factory_wires_the_retention_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_DATA_DIR_SIZE_GB", "0.5")
    monkeypatch.setenv("SDXL_MAX_IMAGE_AGE_S", "86400")
    store = build_store(Settings(image_dir=tmp_path))
    assert isinstance(store, LocalImageStore)
    assert store.max_bytes == 512 * 1024**2 and store.max_age_s == 86400
