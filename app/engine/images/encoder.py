"""Where the watermark and the PNG encoding run: worker processes, so that their CPU time never holds this
process's GIL.

In threads they would: the GPU owner's thread launches kernels in a tight Python loop, and measured on this
project's CI machine a loop of small torch calls keeps 45 % of its rate while one thread encodes (10 % with four),
91 % with the encoding in another process (`python -m bench.encoding` measures it). At 1024² the watermark and PNG
cost ~590 ms of CPU per image, so on a fast GPU in-process encoding starves the launcher.

The image crosses as its raw bytes (a memcpy through a pipe, ~3 MB at 1024², milliseconds) and the PNG comes back
the same way. Workers fork from a forkserver that imported the encoding modules once, so a pool starts in
milliseconds and a crashed worker is replaced by a fresh pool (the image is encoded again there, once).
SDXL_ENCODE_PROCESSES=0 keeps the encoding in threads of this process (as before).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import select
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from PIL import Image

from app.engine.images.metadata import Provenance
from app.engine.images.png import encode_png
from app.engine.images.watermark import apply_watermark, check_available

logger = logging.getLogger(__name__)

# Imported once in the forkserver, so that each worker starts with them (OpenCV, which encodes every PNG and which
# imwatermark uses too: ~2 s with imwatermark).
_FORKSERVER_PRELOAD = ["app.engine.images.encoder", "cv2", "imwatermark"]


def encode(image: Image.Image, provenance: Provenance) -> bytes:
    if provenance.watermark:
        image = apply_watermark(image)
    return encode_png(image, provenance)


def _encode_raw(mode: str, size: tuple[int, int], raw: bytes, provenance: Provenance) -> bytes:
    """In a worker process."""
    return encode(Image.frombytes(mode, size, raw), provenance)


def _ready() -> int:
    """In a worker process, at startup: whatever the first image would otherwise wait for."""
    check_available()  # builds the watermark encoder
    return os.getpid()


def _exit_with(pid: int) -> None:
    """In a worker process, at startup: end when the service process `pid` does, however it ends. A pool's workers
    never notice on their own (each holds its task queue's write end, so its read never ends), so a SIGKILLed
    service (the OOM killer) would leave them, their forkserver and their memory behind for good, one more set at
    each restart. A clean shutdown ends them sooner, through the pool."""
    threading.Thread(target=_wait_then_exit, args=(pid,), name="exit-with-service", daemon=True).start()


def _wait_then_exit(pid: int) -> None:
    try:
        handle = os.pidfd_open(pid)  # Linux: readable once `pid` has exited; no polling, no reused pid mistaken
    except ProcessLookupError:
        pass  # gone already
    except (AttributeError, OSError):  # no pidfds (macOS, Linux < 5.3): poll, once a second
        while _alive(pid):
            time.sleep(1)
    else:
        select.select([handle], [], [])
    os._exit(0)  # not sys.exit: this is not the main thread, and nothing is left to clean up


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or its pid reused by someone else's process
        return False
    return True


def default_processes() -> int:
    """Half the cores this process may use, 2 to 4: the other half is the GPU owner's, the loop's and torch's.

    At least 2 so that a batch's images are encoded side by side and its clients come back together: with one
    worker they return one encode apart and the next batch starts without the last of them. On 2 cores, 8 clients
    (`make bench`'s workload) got 0.88x the bare batch-8 rate with 2 workers and 0.83x with 1 (three runs of each,
    alternating, 2026-12-02); the workers sleep between batches."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(2, min(4, cores // 2))


class Encoder:
    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def _start(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        # Not fork: this process runs torch's threads, and a forked child may inherit their locks held.
        context.set_forkserver_preload(_FORKSERVER_PRELOAD)
        self._pool = ProcessPoolExecutor(
            self.processes, mp_context=context, initializer=_exit_with, initargs=(os.getpid(),)
        )
        return self._pool

    async def encode(self, image: Image.Image, provenance: Provenance) -> bytes:
        if self.processes == 0:
            return await asyncio.to_thread(encode, image, provenance)
        args = (image.mode, image.size, image.tobytes(), provenance)
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            pool = self._pool or self._start()
            try:
                return await loop.run_in_executor(pool, _encode_raw, *args)
            except BrokenProcessPool:
                if self._pool is pool:  # the first to see it replaces the pool; the others retry in the new one
                    self._pool = None
                    await asyncio.to_thread(pool.shutdown, wait=False, cancel_futures=True)
                if attempt == 1:
                    logger.warning("an encoding worker process died; encoding the image again in a new pool")
        # Workers that cannot even start (multiprocessing re-imports the parent's __main__ in each, and one that
        # cannot be imported kills them all) must not fail every image: threads, as with SDXL_ENCODE_PROCESSES=0.
        logger.error("encoding worker processes died twice in a row; encoding in threads of this process from now on")
        self.processes = 0
        return await asyncio.to_thread(encode, image, provenance)

    async def warm(self) -> None:
        """Start the workers now, beside the model load: the forkserver and its imports take seconds, which the
        first image would otherwise wait for. Never fatal: encode() copes with workers that do not come up."""
        if not self.processes:
            return
        loop, pool = asyncio.get_running_loop(), self._pool or self._start()
        try:
            await asyncio.gather(*(loop.run_in_executor(pool, _ready) for _ in range(self.processes)))
        except Exception as exc:
            logger.warning("the encoding worker processes did not start (%s: %s)", type(exc).__name__, exc)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
