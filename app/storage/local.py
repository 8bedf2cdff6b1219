"""Local-disk image store with crash-safe writes and size/age retention.

Each image is written to a temporary file in the store directory, fsynced, then renamed over its final
name and the directory fsynced. A crash at any point leaves either no file under the id or the whole PNG;
leftover temporary files are removed at startup. Metadata travels inside the PNG itself, so it is not
written twice. Job records live in a `.records/` subdirectory.

Retention: with a size cap, the oldest images are removed after a write until the store fits again; with an
age limit, a timer sweeps every min(60 s, limit / 4), so images expire even when nothing is written.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import aiofiles

from app.errors import NotFound, StorageFull, StorageUnavailable
from app.storage.ids import check_id, check_record_name, is_valid_id
from app.storage.listing import ImagePage, StoredImage, page_of

logger = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"


class LocalImageStore:
    def __init__(self, root: Path, *, max_bytes: int = 0, max_age_s: float = 0.0):
        self.root = root
        self.max_bytes = max_bytes  # 0: no cap
        self.max_age_s = max_age_s  # 0: kept forever
        # Writes run in worker threads; retention passes one at a time, so concurrent writes cannot both
        # miss each other's image and leave the store over its cap.
        self._lock = threading.Lock()
        # Images' total size as last counted plus writes since (None: not counted yet). Lets a write skip the
        # directory scan while the store is under its cap; deletions leave it high, which only costs a rescan.
        self._bytes: int | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self._open)
        except OSError as exc:
            raise _storage_error(exc) from exc
        if self.max_age_s and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="image-age-sweep")

    def _open(self) -> None:
        """Create the directory and sweep temporary files a crash may have left behind."""
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.rglob(f"{_TMP_PREFIX}*"):
            logger.warning("removing partial write %s left by an earlier crash", leftover.name)
            leftover.unlink(missing_ok=True)
        self.enforce_retention()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def path_for(self, image_id: str) -> Path:
        return self.root / f"{check_id(image_id)}.png"

    async def put(self, image_id: str, png: bytes, metadata: Mapping[str, str] | None = None) -> None:
        path = self.path_for(image_id)
        await asyncio.to_thread(self._put, path, png)

    def _put(self, path: Path, png: bytes) -> None:
        if self.max_bytes and len(png) > self.max_bytes:
            # Storing it would evict everything else and still break the cap.
            raise StorageFull(f"an image of {len(png)} bytes exceeds the store's cap of {self.max_bytes} bytes")
        _write_atomic(path, png)
        if not self.max_bytes:
            return
        with self._lock:
            if self._bytes is not None:
                self._bytes += len(png)
            if self._bytes is None or self._bytes > self.max_bytes:
                self._retain(keep=path)

    async def get(self, image_id: str) -> bytes:
        path = self.path_for(image_id)
        try:
            async with aiofiles.open(path, "rb") as f:
                return await f.read()
        except FileNotFoundError:
            raise NotFound(f"no image with id {image_id}", field="id") from None
        except OSError as exc:
            raise _storage_error(exc) from exc

    async def exists(self, image_id: str) -> bool:
        return await asyncio.to_thread(self.path_for(image_id).is_file)

    async def delete(self, image_id: str) -> bool:
        path = self.path_for(image_id)

        def unlink() -> bool:
            try:
                path.unlink()
                return True
            except FileNotFoundError:
                return False

        try:
            return await asyncio.to_thread(unlink)
        except OSError as exc:
            raise _storage_error(exc) from exc

    async def list_images(self, limit: int, cursor: str | None = None) -> ImagePage:
        try:
            found = await asyncio.to_thread(_stat_all, self.root.glob("*.png"))
        except OSError as exc:
            raise _storage_error(exc) from exc
        # Only names this store writes; a stray file dropped into the directory is not an image id.
        images = [StoredImage(p.stem, mtime, size) for mtime, size, p in found if is_valid_id(p.stem)]
        return page_of(images, limit, cursor)

    async def read_start(self, image_id: str, max_bytes: int) -> bytes:
        path = self.path_for(image_id)
        try:
            async with aiofiles.open(path, "rb") as f:
                return await f.read(max_bytes)
        except FileNotFoundError:
            raise NotFound(f"no image with id {image_id}", field="id") from None
        except OSError as exc:
            raise _storage_error(exc) from exc

    async def presigned_url(self, image_id: str) -> str | None:
        return None

    async def put_record(self, name: str, data: bytes) -> None:
        await asyncio.to_thread(_write_atomic, self._record_path(name), data)

    async def get_record(self, name: str) -> bytes | None:
        path = self._record_path(name)
        try:
            async with aiofiles.open(path, "rb") as f:
                return await f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _storage_error(exc) from exc

    def _record_path(self, name: str) -> Path:
        return self.root / ".records" / check_record_name(name)

    # --- retention ------------------------------------------------------------------------------------
    async def _sweep_forever(self) -> None:
        interval = max(0.1, min(60.0, self.max_age_s / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.enforce_retention)
            except OSError as exc:  # keep sweeping: a transient disk error must not end expiry for good
                logger.warning("retention sweep failed: %s", exc)

    def enforce_retention(self) -> None:
        """Remove images past the age limit, then the oldest until the store fits its cap."""
        if self.max_bytes or self.max_age_s:
            with self._lock:
                self._retain()

    def _retain(self, keep: Path | None = None) -> None:
        images = sorted(_stat_all(self.root.glob("*.png")))  # oldest first
        now = time.time()
        total = sum(size for _, size, _ in images)
        removed = {"age": 0, "size cap": 0}
        for mtime, size, path in images:
            too_old = bool(self.max_age_s) and now - mtime > self.max_age_s
            too_big = bool(self.max_bytes) and total > self.max_bytes
            if not (too_old or too_big):
                break  # everything after this one is newer, and the total only shrank
            if path == keep and not too_old:
                continue  # never evict the image just written to make room for itself
            path.unlink(missing_ok=True)
            total -= size
            removed["age" if too_old else "size cap"] += 1
        self._bytes = total
        if self.max_age_s:  # job records describe images: they expire with them
            for mtime, _, path in _stat_all(self.root.glob(".records/*/*.json")):
                if now - mtime > self.max_age_s:
                    path.unlink(missing_ok=True)
        if any(removed.values()):
            logger.info("retention removed %s", ", ".join(f"{n} images ({why})" for why, n in removed.items() if n))


def _stat_all(paths: Iterable[Path]) -> list[tuple[float, int, Path]]:
    found = []
    for path in paths:
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed meanwhile (a delete, another sweep)
            continue
        found.append((stat.st_mtime, stat.st_size, path))
    return found


def _write_atomic(target: Path, data: bytes) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=target.parent)
    except OSError as exc:
        raise _storage_error(exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _storage_error(exc) from exc
        raise
    try:
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except OSError as exc:
        # The write is reported as failed, so nobody will ever learn this id: do not leave it behind.
        target.unlink(missing_ok=True)
        raise _storage_error(exc) from exc


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull("the image store is full; the image was not stored")
    return StorageUnavailable(f"the image store failed ({errno.errorcode.get(exc.errno or 0, 'error')})")
