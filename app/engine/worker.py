"""The single owner of the GPU: one thread runs every pipeline call, one at a time.

HTTP handlers never touch a pipeline; they `await worker.run(fn, ...)` and the event loop stays free while
the model works. Loads run here too, so a load never races a generation for device memory.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Timed(Generic[T]):
    value: T
    queue_s: float  # submitted -> started on the owner thread
    run_s: float  # started -> finished


@dataclass
class _Item:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    submitted: float


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # the caller went away (cancelled) while we ran
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class GpuWorker:
    def __init__(self, name: str = "gpu-owner"):
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def run(self, fn: Callable[..., T], *args: Any) -> Timed[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Timed[T]] = loop.create_future()
        self._queue.put(_Item(fn, args, loop, future, time.perf_counter()))
        return await future

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            if item.future.cancelled():
                continue  # its client left before we got to it: don't spend the GPU on it
            started = time.perf_counter()
            value: Any = None
            error: BaseException | None = None
            try:
                result = item.fn(*item.args)
                value = Timed(result, started - item.submitted, time.perf_counter() - started)
            except BaseException as exc:  # handed to the awaiting handler, which decides what it means
                error = exc
            try:
                item.loop.call_soon_threadsafe(_settle, item.future, value, error)
            except RuntimeError:
                logger.debug("event loop closed before a result could be delivered")
