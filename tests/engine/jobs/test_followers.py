"""Streams on another replica's job share one poll of its record (in the real local store, its reads counted), back
off while it does not change, and stop when the job ends, when the last stream goes, or on shutdown."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.engine.jobs.followers import Followers
from app.engine.jobs.records import JobRecords, View
from app.errors import StorageUnavailable
from app.storage.ids import new_id
from app.storage.local import LocalImageStore
from tests.engine.jobs.test_leases import Counted

FAST = {"poll_min_s": 0.02, "poll_max_s": 0.2, "keepalive_s": 5.0}


@pytest.fixture
async def store(tmp_path: Path) -> Counted:
    local = LocalImageStore(tmp_path)
    await local.open()
    return Counted(local)


async def _put(store: Counted, job_id: str, status: str) -> View:
    record = {"id": job_id, "status": status, "created": time.time()}
    await store.put_record(f"jobs/{job_id}.json", json.dumps(record).encode())
    return record


async def _collect(stream: AsyncIterator[View | None], into: list[View]) -> None:
    async for view in stream:
        if view is not None:
            into.append(view)


async def test_a_hundred_streams_share_one_poll_and_all_see_the_end(store: Counted) -> None:
    job_id = new_id()
    first = await _put(store, job_id, "queued")
    records = JobRecords(store, "here")
    followers = Followers(records.load, **FAST)
    seen: list[list[View]] = [[] for _ in range(100)]
    tasks = [asyncio.create_task(_collect(followers.follow(job_id, first), into)) for into in seen]
    await asyncio.sleep(0.5)
    assert followers.polling == 1
    polls = store.reads[f"jobs/{job_id}.json"]
    assert 2 <= polls <= 12, polls  # 0.5 s at 0.02 s backing off to 0.2 s: one poller, not a hundred
    running = await _put(store, job_id, "running")
    await asyncio.sleep(0.3)  # at most one backed-off interval
    done = await _put(store, job_id, "succeeded")
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert all(views == [first, running, done] for views in seen)
    assert followers.polling == 0 and not followers._feeds  # the poll ended with the job


async def test_the_poll_stops_when_the_last_stream_goes(store: Counted) -> None:
    job_id = new_id()
    first = await _put(store, job_id, "queued")
    followers = Followers(JobRecords(store, "here").load, **FAST)
    streams = [followers.follow(job_id, first) for _ in range(3)]
    for stream in streams:
        assert await anext(stream) == first
    waiting = [asyncio.create_task(anext(stream)) for stream in streams]
    await asyncio.sleep(0.1)
    for task, stream in zip(waiting, streams, strict=True):
        task.cancel()  # a client that disconnects
        await asyncio.gather(task, return_exceptions=True)
        await stream.aclose()
    assert followers.polling == 0 and not followers._feeds
    reads = store.reads[f"jobs/{job_id}.json"]
    await asyncio.sleep(0.3)
    assert store.reads[f"jobs/{job_id}.json"] == reads


async def test_store_errors_keep_the_streams_and_shutdown_ends_them() -> None:
    job_id, failures = new_id(), []

    async def flaky(job_id: str) -> View | None:  # fault injection: a store that does not answer
        failures.append(1)
        raise StorageUnavailable("the image store failed (EIO)")

    followers = Followers(flaky, **FAST)
    seen: list[View] = []
    task = asyncio.create_task(_collect(followers.follow(job_id, {"id": job_id, "status": "queued"}), seen))
    await asyncio.sleep(0.3)
    assert len(failures) >= 2 and not task.done()  # one failed read does not end every stream at once
    followers.close()
    await asyncio.wait_for(task, 2)
    assert seen == [{"id": job_id, "status": "queued"}]
    late: list[Any] = []
    await asyncio.wait_for(_collect(followers.follow(job_id, {"id": job_id, "status": "queued"}), late), 2)
    assert len(late) == 1  # after shutdown: the view now, then the stream ends
