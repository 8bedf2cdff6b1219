"""Local-disk image store with crash-safe writes and size/age retention.

Each image is written to a temporary file in the store directory, fsynced, then renamed over its final
name and the directory fsynced. A crash at any point leaves either no file under the id or the whole PNG;
leftover temporary files are removed at startup. Metadata travels inside the PNG itself, so it is not
written twice. Job records live in a `.records/` subdirectory.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import aiofiles

from app.errors import NotFound, StorageFull, StorageUnavailable
from app.storage.ids import check_id

logger = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"
_RECORD_NAME = re.compile(r"[a-z]+/[0-9a-f]{32}\.json")


class LocalImageStore:
    def __init__(self, root: Path, *, max_bytes: int = 0, max_age_s: float = 0.0):
        self.root = root
        self.max_bytes = max_bytes  # 0: no cap
        self.max_age_s = max_age_s  # 0: kept forever

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        """Create the directory and sweep temporary files a crash may have left behind."""
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.rglob(f"{_TMP_PREFIX}*"):
            logger.warning("removing partial write %s left by an earlier crash", leftover.name)
            leftover.unlink(missing_ok=True)
        self._enforce_retention()

    async def close(self) -> None:
        return None

    def path_for(self, image_id: str) -> Path:
        return self.root / f"{check_id(image_id)}.png"

    async def put(self, image_id: str, png: bytes, metadata: Mapping[str, str] | None = None) -> None:
        path = self.path_for(image_id)
        await asyncio.to_thread(self._put, path, png)

    def _put(self, path: Path, png: bytes) -> None:
        _write_atomic(path, png)
        self._enforce_retention(keep=path)

    async def get(self, image_id: str) -> bytes:
        path = self.path_for(image_id)
        try:
            async with aiofiles.open(path, "rb") as f:
                return await f.read()
        except FileNotFoundError:
            raise NotFound(f"no image with id {image_id}", field="id") from None

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

        return await asyncio.to_thread(unlink)

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

    def _record_path(self, name: str) -> Path:
        if not _RECORD_NAME.fullmatch(name):
            raise ValueError(f"not a record name: {name!r}")
        return self.root / ".records" / name

    def _enforce_retention(self, keep: Path | None = None) -> None:
        """Remove images past the age limit, then the oldest until the store fits its cap."""
        if not self.max_bytes and not self.max_age_s:
            return
        images = []
        for path in self.root.glob("*.png"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            images.append((stat.st_mtime, stat.st_size, path))
        images.sort()
        now = time.time()
        total = sum(size for _, size, _ in images)
        for mtime, size, path in images:
            too_old = self.max_age_s and now - mtime > self.max_age_s
            too_big = self.max_bytes and total > self.max_bytes
            if not (too_old or too_big):
                continue
            if path == keep and not too_old:
                continue  # never evict the image just written to make room for itself
            path.unlink(missing_ok=True)
            total -= size
            logger.info("retention removed %s (%s)", path.name, "age" if too_old else "size cap")


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
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
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull("the image store is full; nothing was stored")
    return StorageUnavailable(f"the image store failed ({errno.errorcode.get(exc.errno or 0, 'error')})")
