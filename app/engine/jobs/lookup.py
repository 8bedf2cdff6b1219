"""Any replica's job by id: this replica's own, else the record another replica left in the shared store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from app.engine.jobs.job import Job, JobRegistry, JobStatus
from app.engine.jobs.records import JobRecords, View, follow_local
from app.errors import NotFound, OtherReplica


class JobLookup:
    def __init__(
        self, jobs: JobRegistry, records: JobRecords, view: Callable[[Job], View], cancel: Callable[[Job], Job]
    ):
        self.jobs, self.records, self._view, self._cancel = jobs, records, view, cancel

    async def _record_or_raise(self, job_id: str, missing: NotFound) -> View:
        record = await self.records.load(job_id)
        if record is None:
            raise missing
        return record

    async def find(self, job_id: str) -> View:
        try:
            return self._view(self.jobs.get(job_id))
        except NotFound as missing:
            return await self._record_or_raise(job_id, missing)

    async def cancel(self, job_id: str) -> View:
        """Only the replica running a job can stop it; a finished job elsewhere is answered as it ended."""
        try:
            job = self.jobs.get(job_id)
        except NotFound as missing:
            record = await self._record_or_raise(job_id, missing)
            if JobStatus(record["status"]).terminal:
                return record  # nothing left to cancel, as for a finished job of this replica
            raise OtherReplica(
                f"job {job_id} runs on another replica, which alone can cancel it; retry, or follow /jobs/{job_id}"
            ) from None
        return self._view(self._cancel(job))

    async def watch(self, job_id: str) -> AsyncIterator[View | None]:
        """The job's view now and after each change (None: a keep-alive). Unknown ids raise here, at once."""
        try:
            job = self.jobs.get(job_id)
        except NotFound as missing:
            return self.records.follow(job_id, await self._record_or_raise(job_id, missing))
        return follow_local(job, self._view)
