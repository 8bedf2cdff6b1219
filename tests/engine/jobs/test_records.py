"""How another instance's record reads: as recorded while its replica lives, `failed` (`replica_lost`) once its
instance is gone, and records from before leases neither crash nor read queued for ever."""

from __future__ import annotations

import asyncio
from typing import Any

from app.engine.jobs.job import Job, JobStatus
from app.engine.jobs.leases import Lease
from app.engine.jobs.records import LEGACY_AGE_S, follow_local, settle
from app.storage.ids import new_id

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
INSTANCE, JOB = new_id(), new_id()


def _record(status: str = "queued", **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": JOB,
        "kind": "generate",
        "status": status,
        "model": "tiny",
        "queue_position": None,
        "progress": {"step": 0, "total": 4},
        "created": NOW - 60,
        "started": None,
        "finished": None,
        "timings": {},
        "images": [],
        "parent_id": None,
        "error": None,
        "replica": {"id": "host-a", "instance": INSTANCE},
    }
    return {**record, **changes}


def test_a_live_replicas_record_reads_as_recorded_with_its_liveness() -> None:
    view = settle(_record(), True, None, NOW)
    assert view == {**_record(), "replica": {"id": "host-a", "instance": INSTANCE, "alive": True}}
    assert settle(_record(), None, None, NOW)["status"] == "queued"  # the store did not answer: nothing settled
    done = _record("succeeded", finished=NOW - 1)
    assert settle(done, False, None, NOW)["status"] == "succeeded"  # its own final record wins
    assert settle(done, None, None, NOW)["replica"]["alive"] is None  # not asked once it ended


def test_a_gone_instances_unfinished_record_reads_failed_with_a_reason() -> None:
    lease = Lease("host-a", INSTANCE, started=NOW - 600, heartbeat=NOW - 40, lease_s=30.0)
    view = settle(_record("running"), False, lease, NOW)
    assert view["status"] == "failed" and view["finished"] == NOW - 40 and view["queue_position"] is None
    assert view["error"] == {
        "type": "replica_lost",
        "message": "the replica that ran this job (host-a) stopped renewing its 30s lease at 2027-01-15T07:59:20Z "
        "without finishing it; resubmit the request",
    }
    assert view["replica"] == {"id": "host-a", "instance": INSTANCE, "alive": False}
    stopped = Lease("host-a", INSTANCE, NOW - 600, NOW - 5, 30.0, stopped=NOW - 5)
    assert "stopped at 2027-01-15T07:59:55Z" in settle(_record(), False, stopped, NOW)["error"]["message"]
    assert "left no lease" in settle(_record(), False, None, NOW)["error"]["message"]
    assert settle(_record(), False, lease, NOW) == settle(_record(), False, lease, NOW + 100)  # followers compare


def test_records_from_before_leases_read_as_recorded_until_an_hour_old() -> None:
    legacy = {k: v for k, v in _record().items() if k != "replica"}
    assert settle(legacy, None, None, NOW) == {**legacy, "replica": None}
    old = {**legacy, "created": NOW - LEGACY_AGE_S - 1}
    view = settle(old, None, None, NOW)
    assert view["status"] == "failed" and view["error"]["type"] == "replica_lost" and view["replica"] is None
    done = {**old, "status": "succeeded"}
    assert settle(done, None, None, NOW) == {**done, "replica": None}


async def test_a_local_stream_ends_on_the_final_view_when_its_consumer_is_slow() -> None:
    """A client reading slower than the job changes: the job ends while the stream is still sending an earlier
    view. The stream must still send the final one (it used to stop at the job's status, without it)."""
    job = Job(kind="generate", model="tiny", items=[object()], batch_key=None, pixels=1, steps=3)

    def view(j: Job) -> dict[str, Any]:
        return {"status": j.status.value, "step": j.steps_done}

    async def owner() -> None:
        await asyncio.sleep(0.02)
        job.status = JobStatus.RUNNING
        job.touch()
        for _ in range(3):
            await asyncio.sleep(0.02)
            job.steps_done += 1
            job.touch()
        job.finish(JobStatus.SUCCEEDED)

    running = asyncio.create_task(owner())
    sent = []
    async for current in follow_local(job, view):
        if current is not None:
            sent.append(current)
        await asyncio.sleep(0.05)  # the send waiting for the client to read
    await running
    assert sent[-1] == {"status": "succeeded", "step": 3}, sent
    assert sent[0] == {"status": "queued", "step": 0}
