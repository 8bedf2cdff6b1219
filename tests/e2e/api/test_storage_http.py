"""The store over HTTP with the local disk: DELETE /images/{id}, and a full disk answered 507 then recovered."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.storage import local
from app.storage.local import LocalImageStore
from tests.conftest import start_server, tiny_settings
from tests.helpers import assert_error


def test_delete_image(client: httpx.Client) -> None:
    parent = client.post("/generate", json={"prompt": "x", "seed": 1}).json()
    child = client.post("/refine", json={"id": parent["id"], "prompt": "y", "strength": 0.5}).json()
    r = client.delete(f"/images/{parent['id']}")
    assert r.status_code == 204 and r.content == b""
    assert_error(client.get(f"/download/{parent['id']}"), 404, "not_found")
    assert_error(client.delete(f"/images/{parent['id']}"), 404, "not_found")
    assert client.get(f"/download/{child['id']}").status_code == 200  # derived images stay
    for bad in ["G" * 32, "abc", "0" * 31 + "%0A"]:
        assert_error(client.delete(f"/images/{bad}"), 422, "invalid_id", field="id")


def test_disk_full_is_507_leaves_nothing_and_recovers(
    model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = tmp_path / "images"
    live = start_server(tiny_settings(model_cache, images))

    def disk_full(fd: int) -> None:  # fault injection: the device fills up at fsync
        raise OSError(28, "No space left on device")

    try:
        with live.client() as c:
            monkeypatch.setattr("app.storage.local.os.fsync", disk_full)
            error = assert_error(c.post("/generate", json={"prompt": "x", "num_images": 2}), 507, "storage_full")
            assert "full" in error["message"]
            job = c.post("/generate", json={"prompt": "x"}, headers={"Prefer": "respond-async"}).json()
            deadline = time.monotonic() + 60
            while (failed := c.get(f"/jobs/{job['id']}").json())["status"] in ("queued", "running"):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert failed["status"] == "failed" and failed["error"]["type"] == "storage_full"
            # No image, no record, no partial write; only the replica lease, written at startup before the disk filled.
            left = [p.relative_to(images).as_posix() for p in images.rglob("*") if p.is_file()]
            assert [name for name in left if not name.startswith(".records/replicas/")] == [], left
            assert not [name for name in left if ".tmp-" in name], left
            assert c.get("/ready").status_code == 200  # a full disk is not the pipeline's fault

            monkeypatch.undo()
            r = c.post("/generate", json={"prompt": "x"})
            assert r.status_code == 200, r.text
            assert (images / f"{r.json()['id']}.png").is_file()
    finally:
        live.stop()


def test_disk_full_after_some_images_names_the_ones_stored(
    model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2-image job whose second write finds the disk full: the error says which image was stored, and it is."""
    images = tmp_path / "images"
    live = start_server(tiny_settings(model_cache, images))
    real_put = LocalImageStore.put
    puts = 0

    async def second_put_finds_the_disk_full(self: LocalImageStore, *args: Any, **kwargs: Any) -> Any:
        nonlocal puts
        puts += 1
        if puts == 2:  # fault injection: the store's own error for ENOSPC
            raise local._storage_error(OSError(28, "No space left on device"))
        return await real_put(self, *args, **kwargs)

    try:
        with live.client() as c:
            monkeypatch.setattr(LocalImageStore, "put", second_put_finds_the_disk_full)
            error = assert_error(c.post("/generate", json={"prompt": "x", "num_images": 2}), 507, "storage_full")
            assert "the image was not stored" in error["message"] and "nothing was stored" not in error["message"]
            stored = re.findall(r"1 of 2 images had been stored: ([0-9a-f]{32})", error["message"])
            assert len(stored) == 1, error["message"]
            assert c.get(f"/download/{stored[0]}").status_code == 200
    finally:
        live.stop()
