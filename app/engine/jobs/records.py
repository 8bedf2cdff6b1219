"""Job records: each job's state kept in the image store, so any replica can answer for any job.

The replica that runs a job writes its snapshot as `jobs/<id>.json` when the job is accepted and when it ends;
a replica that does not know an id reads that record instead. Progress in between stays with the replica that
runs the job: a record says "queued" until the job ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from app.engine.jobs.job import Job, JobStatus
from app.errors import ServiceError
from app.storage.base import ImageStore
from app.storage.ids import check_id

logger = logging.getLogger(__name__)

KEEPALIVE_S = 15.0  # proxies close streams that stay silent longer
POLL_S = 0.5  # how often a stream about another replica's job rereads its record

View = dict[str, Any]


def _name(job_id: str) -> str:
    return f"jobs/{check_id(job_id)}.json"


def _terminal(view: View) -> bool:
    return JobStatus(view["status"]).terminal


class JobRecords:
    def __init__(self, store: ImageStore):
        self.store = store
        self._locks: dict[str, asyncio.Lock] = {}

    async def save(self, job: Job) -> None:
        """Write the job's state. A failed write is logged, never raised: the job itself is unaffected."""
        # One write per job at a time, each taking the snapshot when its turn comes: a slow "accepted" write
        # can then never land after the "ended" one and leave the record saying "queued" for good.
        lock = self._locks.setdefault(job.id, asyncio.Lock())
        try:
            async with lock:
                await self.store.put_record(_name(job.id), json.dumps(job.snapshot(None)).encode())
        except ServiceError as exc:
            logger.warning("could not save the record of job %s: %s", job.id, exc.message)
        except Exception:
            logger.exception("could not save the record of job %s", job.id)
        finally:
            if job.status.terminal:
                self._locks.pop(job.id, None)

    async def load(self, job_id: str) -> View | None:
        data = await self.store.get_record(_name(job_id))
        if data is None:
            return None
        view: View = json.loads(data)
        return view

    async def follow(self, job_id: str, first: View) -> AsyncIterator[View | None]:
        """Another replica's job: its record now, then each change (polled), None as a keep-alive."""
        last, quiet = first, 0.0
        yield first
        while not _terminal(last):
            await asyncio.sleep(POLL_S)
            try:
                current = await self.load(job_id) or last  # a record removed by retention: keep the last
            except ServiceError as exc:
                logger.warning("stopped following job %s: %s", job_id, exc.message)
                return
            quiet = 0.0 if current != last else quiet + POLL_S
            if current != last:
                yield current
            elif quiet >= KEEPALIVE_S:
                yield None
                quiet = 0.0
            last = current


async def follow_local(job: Job, view: Callable[[Job], View]) -> AsyncIterator[View | None]:
    """This replica's job: its view now, then after each change, None as a keep-alive, until it ends."""
    last = view(job)
    yield last
    while not job.status.terminal:
        await job.changed(timeout=KEEPALIVE_S)
        current = view(job)
        yield None if current == last else current
        last = current
