"""This process's lease (leases.py): renewed every third of SDXL_REPLICA_LEASE_S, marked stopped on a graceful stop.

The instance is made here, per process, not from the replica's name: a replica restarted on the same host keeps
its name, and would otherwise renew the dead process's lease and make its jobs look alive for ever.

Readers remember a lapsed instance as lost for good, so this side never renews a lease that may have looked
lapsed: when a renewal lands more than a lease after the previous one did (a slow or unreachable store), jobs
accepted from then on run under a new instance. Those accepted before may read failed elsewhere until they end;
their final record, written later, is what stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from app.engine.jobs.leases import Lease, lease_name
from app.errors import ServiceError
from app.storage.base import ImageStore
from app.storage.ids import new_id

logger = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        store: ImageStore,
        replica: str,
        lease_s: float,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.store, self.replica, self.lease_s = store, replica, lease_s
        self.interval = lease_s / 3  # two renewals may fail before the lease lapses
        self._clock, self._monotonic = clock, monotonic
        self._failing_since: float | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._new_instance()

    def _new_instance(self) -> None:
        self.instance = new_id()
        self._started = self._clock()
        self._renewed = self._monotonic()  # being made counts as a renewal: readers give it a lease to land one

    def start(self) -> None:
        """Renew from now on; called once the store has opened (no job runs under this instance before)."""
        self._renewed = self._monotonic()
        self._task = asyncio.create_task(self._renew_forever(), name="replica-heartbeat")

    async def _renew_forever(self) -> None:
        while not self._stopping.is_set():
            began = self._monotonic()
            await self.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(0.0, self.interval - (self._monotonic() - began)))

    async def beat(self) -> None:
        """Renew the lease once. Never raises: a failing store is logged once per outage, not once per beat."""
        began = self._monotonic()
        lease = Lease(self.replica, self.instance, self._started, self._clock(), self.lease_s)
        if not await self._write(lease):
            return
        if self._monotonic() - self._renewed > self.lease_s:
            old = self.instance
            self._new_instance()
            logger.warning(
                "this replica's lease (instance %s) went unrenewed for over %gs, so other replicas may count it as "
                "gone and report its unfinished jobs as failed (replica_lost) until they end; new jobs run under "
                "instance %s",
                old,
                self.lease_s,
                self.instance,
            )
        else:
            self._renewed = began

    async def stop(self) -> None:
        """A graceful stop: readers end this instance's unfinished jobs at once instead of after its lease."""
        if self._task is None:
            return  # never started: the store may not even have opened
        self._stopping.set()
        await self._task  # a renewal in flight lands first: landing after the stop, it would undo it
        now = self._clock()
        await self._write(Lease(self.replica, self.instance, self._started, now, self.lease_s, stopped=now))

    async def _write(self, lease: Lease) -> bool:
        try:
            await self.store.put_record(lease_name(lease.instance), lease.encode())
        except Exception as exc:  # the service runs on; the jobs' own record writes meet the same outage
            if self._failing_since is None:
                self._failing_since = self._monotonic()
                reason = exc.message if isinstance(exc, ServiceError) else repr(exc)
                logger.warning("could not renew this replica's lease: %s; retrying every %gs", reason, self.interval)
            return False
        if self._failing_since is not None:
            logger.info("renewed this replica's lease again, after %.0fs", self._monotonic() - self._failing_since)
            self._failing_since = None
        return True
