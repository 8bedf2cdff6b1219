"""The event loop's side of the refiner: its files are resolved at startup, it loads once on first use, and a
failure is remembered for FAILED_LOAD_TTL_S.

The GPU owner holds the pipeline (gpu/runner.py). Nothing on the event loop reads the owner's state, so the loop
keeps its own copy of the loaded refiner and of the last failure here, and refuses a request at once, without a
call to the owner, while a failure is recent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from app.engine.gpu.model_cache import refuse_if_recent
from app.engine.gpu.runner import Runner
from app.engine.gpu.scheduler import Scheduler
from app.errors import ModelLoadError

logger = logging.getLogger(__name__)


class RefinerAccess:
    def __init__(self, scheduler: Scheduler):
        self._scheduler = scheduler
        self._lock = asyncio.Lock()
        self._pipe: Any = None
        self.failed: tuple[float, str] | None = None  # (monotonic time, message) of the last failed resolve or load
        self.loads = 0  # load attempts: one, unless a load failed

    async def resolve(self, runner: Runner) -> None:
        """At startup, after the default model. A failure does not fail startup (generating needs no refiner):
        it is logged once, and every /refine and ensemble request is answered with it until the TTL has passed."""
        try:
            await self._scheduler.call(runner.resolve_refiner)
        except ModelLoadError as exc:
            self.failed = (time.monotonic(), exc.message)
            logger.warning("refine unavailable: /refine and ensemble requests answer 503: %s", exc.for_operator)

    async def get(self, runner: Runner) -> Any:
        """The refiner, loaded on first use exactly once, however many requests ask at the same time.

        The lock is held across the load, so concurrent first callers wait for the one load instead of starting
        their own; if it fails, they and every later caller within the TTL are refused with its message.
        """
        if self._pipe is not None:
            return self._pipe
        refuse_if_recent(self.failed)  # at once, not after a wait for the owner
        async with self._lock:
            if self._pipe is None:
                refuse_if_recent(self.failed)  # the load this caller waited for has just failed
                self.loads += 1
                try:
                    self._pipe = (await self._scheduler.call(runner.load_refiner)).value
                except ModelLoadError as exc:
                    self.failed = (time.monotonic(), exc.message)
                    raise
                self.failed = None
        return self._pipe
