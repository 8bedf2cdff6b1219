"""Replica leases: how a reader tells a job still running in another process from one whose process is gone.

Each serving process, an *instance* (a restarted replica keeps its name and gets a new instance), rewrites
`replicas/<instance>.json` every third of its lease (heartbeat.py), and every job record names the instance that
accepted it. An unfinished record whose instance's lease lapsed reads `failed`, `replica_lost` (records.py):
after a kill -9 nothing else would ever end it. Replicas' clocks differ, so a lease lapses `SKEW_S` after its
term. A lapsed lease is never renewed (heartbeat.py takes a new instance instead), so a reader may remember an
instance as lost for good: a job never reads failed and then queued again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

from app.errors import ServiceError
from app.storage.base import ImageStore
from app.storage.ids import check_id

logger = logging.getLogger(__name__)

V = TypeVar("V")

SKEW_S = 2.0  # how far replicas' clocks may disagree (NTP keeps them within milliseconds; a resumed VM may not)


@dataclass(frozen=True)
class Lease:
    replica: str  # SDXL_NODE_ID, else the host name
    instance: str
    started: float  # unix times, by the writer's clock
    heartbeat: float  # the last renewal
    lease_s: float  # the writer's own SDXL_REPLICA_LEASE_S: readers with other settings agree on its term
    stopped: float | None = None  # a graceful stop: lapsed at once

    def lapsed(self, now: float) -> bool:
        return self.stopped is not None or now > self.heartbeat + self.lease_s + SKEW_S

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> Lease:
        """Raises ValueError, KeyError or TypeError for a malformed lease."""
        raw = json.loads(data)
        stopped = raw.get("stopped")
        return cls(
            replica=str(raw["replica"]),
            instance=str(raw["instance"]),
            started=float(raw["started"]),
            heartbeat=float(raw["heartbeat"]),
            lease_s=float(raw["lease_s"]),
            stopped=None if stopped is None else float(stopped),
        )


def lease_name(instance: str) -> str:
    return f"replicas/{check_id(instance, 'instance')}.json"


@dataclass(frozen=True)
class Liveness:
    alive: bool | None  # None: unknown, the store did not answer
    lease: Lease | None = None  # as last read; None: none found (or none could be read)


@dataclass(frozen=True)
class _Read:
    lease: Lease | None
    at: float  # monotonic


class Leases:
    """Other instances' leases as this process last read them.

    However many readers ask (GETs, the feeds of followers.py), each instance's lease is read at most once per
    renewal interval (a third of its term: more often finds nothing new), with one read in flight at a time; one
    that looks lapsed is read again before it counts. An instance found lapsed is remembered as lost.
    """

    def __init__(
        self,
        store: ImageStore,
        lease_s: float,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        max_kept: int = 1024,
    ):
        self.store, self.lease_s, self._max_kept = store, lease_s, max_kept
        self._clock, self._monotonic = clock, monotonic
        self._reads: OrderedDict[str, _Read] = OrderedDict()
        self._lost: OrderedDict[str, Lease | None] = OrderedDict()
        self._reading: dict[str, asyncio.Task[Lease | None]] = {}
        self._failing = False

    async def check(self, instance: str, since: float) -> Liveness:
        """Whether `instance` still holds its lease. `since`: when its job was accepted (the record's `created`):
        no lease found yet for a job accepted less than a lease ago is presumed alive, its first renewal may still
        be on its way (heartbeat.py gives an instance that long to land one)."""
        if instance in self._lost:
            return Liveness(False, self._lost[instance])
        read = self._reads.get(instance)
        if read is None or self._stale(read) or not self._alive(read.lease, since):
            try:
                read = _Read(await self._read(instance), self._monotonic())
            except ServiceError as exc:
                if not self._failing:
                    logger.warning("could not read replica leases (%s); liveness unknown until it answers", exc.message)
                self._failing = True
                return Liveness(None, read.lease if read else None)
            self._failing = False
            _keep(self._reads, instance, read, self._max_kept)
        if self._alive(read.lease, since):
            return Liveness(True, read.lease)
        self._reads.pop(instance, None)
        _keep(self._lost, instance, read.lease, self._max_kept)
        return Liveness(False, read.lease)

    def _alive(self, lease: Lease | None, since: float) -> bool:
        now = self._clock()
        if lease is None:
            return now <= since + self.lease_s + SKEW_S
        return not lease.lapsed(now)

    def _stale(self, read: _Read) -> bool:
        term = read.lease.lease_s if read.lease is not None else self.lease_s
        return self._monotonic() - read.at > term / 3

    async def _read(self, instance: str) -> Lease | None:
        task = self._reading.get(instance)
        if task is None:
            task = asyncio.create_task(self._fetch(instance), name=f"read-lease-{instance}")
            self._reading[instance] = task
            task.add_done_callback(lambda done: self._read_done(instance, done))
        # Shielded: a reader that goes away (a closed stream) must not cancel the read the others wait for.
        return await asyncio.shield(task)

    def _read_done(self, instance: str, task: asyncio.Task[Lease | None]) -> None:
        self._reading.pop(instance, None)
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every reader went away before it ended

    async def _fetch(self, instance: str) -> Lease | None:
        data = await self.store.get_record(lease_name(instance))
        if data is None:
            return None
        try:
            return Lease.decode(data)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("the lease of instance %s is malformed (%s); counting it as missing", instance, exc)
            return None


def _keep(cache: OrderedDict[str, V], key: str, value: V, max_kept: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > max_kept:
        cache.popitem(last=False)
