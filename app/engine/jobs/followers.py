"""Streams on another replica's job share one poll of its record, however many there are.

Each SSE stream used to reread the record twice a second (300 streams on one job: 600 store reads a second).
Now the streams of one job share a feed that rereads it (with its replica's liveness, leases.py) every
`POLL_MIN_S` while it changes, backing off to every `POLL_MAX_S` while it does not. The feed ends when the job
does (a lapsed lease ends it too, as `replica_lost`) or when its last stream goes, and all of them on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field

from app.engine.jobs.records import KEEPALIVE_S, View, terminal
from app.errors import ServiceError

logger = logging.getLogger(__name__)

POLL_MIN_S = 1.0
POLL_MAX_S = 5.0  # the most a stream lags the record's change
BACKOFF = 1.5


@dataclass(eq=False)
class _Feed:
    job_id: str
    view: View
    streams: int = 0
    ended: bool = False  # no poll runs: the job ended, or the service is stopping
    task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, view: View | None = None) -> None:
        if view is not None:
            self.view = view
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)


class Followers:
    def __init__(
        self,
        read: Callable[[str], Awaitable[View | None]],
        *,
        poll_min_s: float = POLL_MIN_S,
        poll_max_s: float = POLL_MAX_S,
        keepalive_s: float = KEEPALIVE_S,
    ):
        self._read = read  # the job's view as a reader sees it now; None: its record is gone (retention)
        self.poll_min_s, self.poll_max_s, self.keepalive_s = poll_min_s, poll_max_s, keepalive_s
        self._feeds: dict[str, _Feed] = {}
        self._closed = False

    @property
    def polling(self) -> int:
        """Feeds with a poll running now."""
        return sum(1 for feed in self._feeds.values() if not feed.ended)

    async def follow(self, job_id: str, first: View) -> AsyncGenerator[View | None, None]:
        """The job's view `first` (just read), then each change, None as a keep-alive, until it ends."""
        feed = self._feeds.get(job_id)
        if feed is None:
            feed = self._feeds[job_id] = _Feed(job_id, first, ended=self._closed or terminal(first))
            if not feed.ended:
                feed.task = asyncio.create_task(self._poll(feed), name=f"follow-{job_id}")
        feed.streams += 1
        try:
            last = first
            yield first
            while not terminal(last):
                if feed.view == last:
                    if feed.ended:
                        return  # the service is stopping: the client may follow the job on another replica
                    await feed.changed(self.keepalive_s)
                current = feed.view
                yield None if current == last else current
                last = current
        finally:
            feed.streams -= 1
            if feed.streams == 0 and self._feeds.get(job_id) is feed:
                del self._feeds[job_id]
                if feed.task is not None:
                    feed.task.cancel()

    async def _poll(self, feed: _Feed) -> None:
        interval, failing = self.poll_min_s, False
        try:
            while not terminal(feed.view):
                await asyncio.sleep(interval)
                try:
                    current = await self._read(feed.job_id)
                except ServiceError as exc:  # keep following: one lost read must not end every stream at once
                    if not failing:
                        logger.warning("could not reread the record of job %s: %s; retrying", feed.job_id, exc.message)
                    failing, interval = True, min(interval * BACKOFF, self.poll_max_s)
                    continue
                failing = False
                if current is None or current == feed.view:  # None: removed by retention; keep the last
                    interval = min(interval * BACKOFF, self.poll_max_s)
                else:
                    feed.publish(current)
                    interval = self.poll_min_s
        finally:
            feed.ended = True
            feed.publish()

    def close(self) -> None:
        """Shutdown: end every feed, so their streams end and the server can drain."""
        self._closed = True
        for feed in self._feeds.values():
            if feed.task is not None:
                feed.task.cancel()
