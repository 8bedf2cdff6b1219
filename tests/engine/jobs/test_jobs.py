"""The job registry keeps finished jobs for their TTL (and a bounded number of them), never active ones."""

from __future__ import annotations

import time

import pytest

from app.engine.jobs.job import Job, JobRegistry, JobStatus
from app.errors import InvalidId, NotFound


def _job() -> Job:
    return Job(kind="generate", model="tiny", items=[object()], batch_key=None, pixels=1, steps=4)


async def test_finished_jobs_expire_after_ttl_but_active_ones_stay() -> None:
    registry = JobRegistry(ttl=0.05)
    active, done = _job(), _job()
    registry.add(active)
    registry.add(done)
    assert done.finish(JobStatus.SUCCEEDED)
    assert not done.finish(JobStatus.FAILED)  # a terminal state is final
    assert registry.get(done.id) is done
    time.sleep(0.1)
    with pytest.raises(NotFound):
        registry.get(done.id)
    assert registry.get(active.id) is active
    with pytest.raises(InvalidId):
        registry.get("../" + active.id)


async def test_registry_is_bounded() -> None:
    registry = JobRegistry(ttl=3600, max_kept=3)
    jobs = [_job() for _ in range(5)]
    for job in jobs:
        registry.add(job)
        job.finish(JobStatus.SUCCEEDED)
    registry.prune()
    held = {j.id for j in registry.kept()}
    kept = [j for j in jobs if j.id in held]
    assert kept == jobs[-3:]
