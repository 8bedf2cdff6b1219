"""Job records: each job's state kept in the image store, so any replica can answer for any job.

The replica that runs a job writes its snapshot as `jobs/<id>.json` when the job is accepted and when it ends,
naming itself and the instance (process) that runs it; a replica that does not know an id reads that record
instead. Progress in between stays with the replica that runs the job: a record says "queued" until the job
ends, or until its instance's lease lapses (leases.py), when `settle` answers it `failed` (`replica_lost`): a
killed process never writes its jobs' ends. Nothing is written back: the running replica's own final record must
win over a reader's verdict, and the verdict follows from the lease alone.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from app.engine.jobs.job import Job, JobFailure, JobStatus
from app.engine.jobs.leases import Lease
from app.errors import ServiceError
from app.storage.base import ImageStore
from app.storage.ids import check_id

logger = logging.getLogger(__name__)

KEEPALIVE_S = 15.0  # proxies close streams that stay silent longer
# Records written before leases name no instance. Whatever wrote one still unfinished this long ago is gone:
# every replica since runs this version (a rolling upgrade takes minutes), and no job runs for an hour.
LEGACY_AGE_S = 3600.0
SAVE_ATTEMPTS, SAVE_RETRY_S = 5, 0.5  # a failed record write is retried after 0.5, 1, 2 and 4 s
RETRIES_S = SAVE_RETRY_S * (2 ** (SAVE_ATTEMPTS - 1) - 1)  # 7.5 s of waits between them

View = dict[str, Any]


def _name(job_id: str) -> str:
    return f"jobs/{check_id(job_id)}.json"


def terminal(view: View) -> bool:
    return JobStatus(view["status"]).terminal


class JobRecords:
    def __init__(self, store: ImageStore, replica: str):
        self.store, self.replica = store, replica
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # job id -> its writes' lock, and how many use it

    def view(self, job: Job, position: int | None) -> View:
        """This replica's own job: alive, since this process answers for it (not asked once it ended, as elsewhere)."""
        alive = None if job.status.terminal else True
        return {**job.snapshot(position), "replica": {"id": self.replica, "instance": job.instance, "alive": alive}}

    async def save(self, job: Job) -> None:
        """Write the job's state. A failed write is logged, never raised: the job itself is unaffected.

        A store error (full, unreachable) is retried, each attempt with the job's state then: an ended job whose
        last write was lost would read "queued" to every other replica, and here once it is forgotten, while its
        instance lives."""
        # One write per job at a time, each taking the snapshot when its turn comes: a slow "accepted" write
        # can then never land after the "ended" one and leave the record saying "queued" for good.
        lock, users = self._locks.get(job.id, (asyncio.Lock(), 0))
        self._locks[job.id] = (lock, users + 1)
        try:
            async with lock:
                for attempt in range(1, SAVE_ATTEMPTS + 1):
                    record = {**job.snapshot(None), "replica": {"id": self.replica, "instance": job.instance}}
                    try:
                        await self.store.put_record(_name(job.id), json.dumps(record).encode())
                        return
                    except ServiceError as exc:
                        why = exc.message
                        logger.warning("could not save the record of job %s (try %d): %s", job.id, attempt, why)
                    if attempt < SAVE_ATTEMPTS:
                        await asyncio.sleep(SAVE_RETRY_S * 2 ** (attempt - 1))
        except Exception:
            logger.exception("could not save the record of job %s", job.id)
        finally:
            lock, users = self._locks[job.id]
            if users > 1:
                self._locks[job.id] = (lock, users - 1)
            else:  # the last writer of this job for now: a later save (a late image) starts a new lock
                del self._locks[job.id]

    async def load(self, job_id: str) -> View | None:
        data = await self.store.get_record(_name(job_id))
        if data is None:
            return None
        view: View = json.loads(data)
        return view


def settle(record: View, alive: bool | None, lease: Lease | None, now: float) -> View:
    """Another instance's record as readers see it: with its replica's liveness (None: not known, or not asked
    because the job ended), and `failed` (`replica_lost`) where it is unfinished and its instance is gone."""
    replica = record.get("replica")
    if replica is None:  # a record from before leases
        if terminal(record) or now - record["created"] <= LEGACY_AGE_S:
            return {**record, "replica": None}
        message = f"this job's replica recorded no lease and has not finished it in {LEGACY_AGE_S:g}s"
        return _lost(record, None, JobFailure("replica_lost", f"{message}; resubmit the request"), None)
    if terminal(record) or alive is not False:
        return {**record, "replica": {**replica, "alive": None if terminal(record) else alive}}
    return _lost(record, replica, JobFailure("replica_lost", _why_lost(replica["id"], lease)), lease)


def _why_lost(name: str, lease: Lease | None) -> str:
    # Absolute times only: a view must not change while nothing does (followers compare them).
    if lease is None:
        why = "left no lease"
    elif lease.stopped is not None:
        why = f"stopped at {_iso(lease.stopped)}"
    else:
        why = f"stopped renewing its {lease.lease_s:g}s lease at {_iso(lease.heartbeat)}"
    return f"the replica that ran this job ({name}) {why} without finishing it; resubmit the request"


def _lost(record: View, replica: dict[str, Any] | None, failure: JobFailure, lease: Lease | None) -> View:
    return {
        **record,
        "status": JobStatus.FAILED.value,
        "queue_position": None,
        "finished": None if lease is None else lease.stopped or lease.heartbeat,  # last known to run
        "error": {"type": failure.type, "message": failure.message},
        "replica": None if replica is None else {**replica, "alive": False},
    }


def _iso(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def follow_local(job: Job, view: Callable[[Job], View]) -> AsyncIterator[View | None]:
    """This replica's job: its view now, then after each change, None as a keep-alive, until its final view.

    The job may change, and end, while the consumer is still sending the last view (a client reading slowly):
    so the next view is compared before waiting, and the loop ends on the last view sent, not on the job's status.
    """
    last = view(job)
    yield last
    while True:
        current = view(job)
        if current != last:
            yield current
            last = current
        elif job.status.terminal:
            return
        else:
            await job.changed(timeout=KEEPALIVE_S)
            if view(job) == last:
                yield None
