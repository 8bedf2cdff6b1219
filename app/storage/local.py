"""Local-disk image store with crash-safe writes.

Each image is written to a temporary file in the store directory, fsynced, then renamed over its final
name and the directory fsynced. A crash at any point leaves either no file under the id or the whole PNG;
leftover temporary files are removed at startup.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path

import aiofiles

from app.errors import NotFound
from app.storage.ids import check_id

logger = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"


class LocalImageStore:
    def __init__(self, root: Path):
        self.root = root

    def open(self) -> None:
        """Create the directory and sweep temporary files a crash may have left behind."""
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob(f"{_TMP_PREFIX}*"):
            logger.warning("removing partial write %s left by an earlier crash", leftover.name)
            leftover.unlink(missing_ok=True)

    def path_for(self, image_id: str) -> Path:
        return self.root / f"{check_id(image_id)}.png"

    async def put(self, image_id: str, png: bytes) -> None:
        await asyncio.to_thread(self._write_atomic, self.path_for(image_id), png)

    async def get(self, image_id: str) -> bytes:
        path = self.path_for(image_id)
        try:
            async with aiofiles.open(path, "rb") as f:
                return await f.read()
        except FileNotFoundError:
            raise NotFound(f"no image with id {image_id}", field="id") from None

    async def exists(self, image_id: str) -> bool:
        return await asyncio.to_thread(self.path_for(image_id).is_file)

    def _write_atomic(self, target: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
