"""Any replica's job by id: this replica's own, else the record another replica left in the shared store, read
with the liveness of the instance that runs it (a gone one's unfinished jobs read failed, records.settle)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from app.engine.jobs.followers import Followers
from app.engine.jobs.job import Job, JobRegistry
from app.engine.jobs.leases import Leases
from app.engine.jobs.records import JobRecords, View, follow_local, settle, terminal
from app.errors import NotFound, OtherReplica


class JobLookup:
    def __init__(
        self,
        jobs: JobRegistry,
        records: JobRecords,
        leases: Leases,
        view: Callable[[Job], View],
        cancel: Callable[[Job], Job],
    ):
        self.jobs, self.records, self.leases, self._view, self._cancel = jobs, records, leases, view, cancel
        self.followers = Followers(self._remote)

    async def _remote(self, job_id: str) -> View | None:
        record = await self.records.load(job_id)
        if record is None:
            return None
        replica = record.get("replica")
        if terminal(record) or replica is None:
            return settle(record, None, None, time.time())
        liveness = await self.leases.check(replica["instance"], since=record["created"])
        return settle(record, liveness.alive, liveness.lease, time.time())

    async def _remote_or_raise(self, job_id: str, missing: NotFound) -> View:
        view = await self._remote(job_id)
        if view is None:
            raise missing
        return view

    async def find(self, job_id: str) -> View:
        try:
            return self._view(self.jobs.get(job_id))
        except NotFound as missing:
            return await self._remote_or_raise(job_id, missing)

    async def cancel(self, job_id: str) -> View:
        """Only the replica running a job can stop it; a job that ended elsewhere (or whose replica is gone) is
        answered as it ended."""
        try:
            job = self.jobs.get(job_id)
        except NotFound as missing:
            view = await self._remote_or_raise(job_id, missing)
            if terminal(view):
                return view  # nothing left to cancel, as for a finished job of this replica
            raise OtherReplica(
                f"job {job_id} runs on another replica, which alone can cancel it; retry, or follow /jobs/{job_id}"
            ) from None
        return self._view(self._cancel(job))

    async def watch(self, job_id: str) -> AsyncIterator[View | None]:
        """The job's view now and after each change (None: a keep-alive). Unknown ids raise here, at once."""
        try:
            job = self.jobs.get(job_id)
        except NotFound as missing:
            return self.followers.follow(job_id, await self._remote_or_raise(job_id, missing))
        return follow_local(job, self._view)
