"""The real Scheduler with a stand-in pipeline: closed-loop clients, shutdown while gathering, queue time.

Closed-loop clients come back as soon as their image is delivered. The pipeline is a stand-in (a sleep whose length
barely depends on the batch size, as on a CPU where a call of 1 or 2 images costs almost what a call of 4 does), and
delivery is one encoding worker taking ENCODE_S per image, in turn. That is the shape of `make bench`'s 8-client
run; what is checked is the policy's outcome: the clients end up in two equal groups that take turns, and once they
have, the owner never waits for anyone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from app.engine.gpu import batching
from app.engine.gpu.scheduler import Batch, Item, Scheduler
from app.engine.jobs.job import Job, JobStatus

CLIENTS = 8
CALL_S = 0.12  # per pipeline call, plus a little per image
PER_IMAGE_S = 0.002
ENCODE_S = 0.012  # per image, one worker: a group of 4 is delivered in ~50 ms, well inside the other's call
CALLS = 16


def _job(images: int = 1, key: tuple[Any, ...] | None = ("k",)) -> Job:
    return Job(kind="generate", model="tiny", items=[object()] * images, batch_key=key, pixels=4096, steps=1)


def _scheduler(run: Callable[..., list[Any]], done: Callable[[Batch, list[Any]], None], **kw: Any) -> Scheduler:
    settings: dict[str, Any] = {
        "max_queue": 32,
        "max_batch": CLIENTS,
        "max_batch_pixels": CLIENTS * 4096,
        "window_s": 0.05,
        "on_started": lambda batch: None,
        "on_step": lambda batch: None,
        "on_done": done,
        "on_error": lambda batch, exc: None,
    }
    return Scheduler(run, **{**settings, **kw})


async def _closed_loop(waited: list[int], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Batch sizes, in order; `waited` gets the number of calls done whenever the owner decides to wait."""
    sizes: list[int] = []
    loop = asyncio.get_running_loop()
    encoder = asyncio.Lock()
    all_done = loop.create_future()
    deliveries: set[asyncio.Task[None]] = set()

    def run(batch: Batch, on_step: Any) -> list[Any]:
        time.sleep(CALL_S + PER_IMAGE_S * len(batch.items))
        return [None] * len(batch.items)

    def client() -> Job:
        job = _job()
        job.awaited = True  # as service.wait marks a synchronous request's job
        return job

    async def deliver(job: Job) -> None:
        async with encoder:
            await asyncio.sleep(ENCODE_S)
        job.finish(JobStatus.SUCCEEDED)  # as the service does, before it tells the scheduler
        scheduler.job_finished(job)
        await asyncio.sleep(0.001)  # the answer's round trip
        if len(sizes) < CALLS:
            scheduler.submit(client())
        elif not all_done.done():
            all_done.set_result(None)

    def done(batch: Batch, results: list[Any]) -> None:
        sizes.append(len(batch.items))
        for job in batch.jobs:
            task = loop.create_task(deliver(job))
            deliveries.add(task)
            task.add_done_callback(deliveries.discard)

    scheduler = _scheduler(run, done)
    real_keep_waiting = batching.keep_waiting

    def keep_waiting(*args: Any, **kwargs: Any) -> bool:
        decision = real_keep_waiting(*args, **kwargs)
        if decision:
            waited.append(len(sizes))
        return decision

    monkeypatch.setattr(batching, "keep_waiting", keep_waiting)
    scheduler.start()
    try:
        for _ in range(CLIENTS):
            scheduler.submit(client())
        await asyncio.wait_for(all_done, 30)
    finally:
        scheduler.close()
        await asyncio.to_thread(scheduler.stop, 5)
    return sizes


def test_closed_loop_clients_settle_into_two_equal_groups_and_the_owner_stops_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waited: list[int] = []
    sizes = asyncio.run(_closed_loop(waited, monkeypatch))
    settled = sizes[6:]
    assert settled == [CLIENTS // 2] * len(settled), sizes
    # Each group is back while the other's call runs, so once settled no call waits for companions.
    assert [calls for calls in waited if calls >= 6] == [], (sizes, waited)


def test_close_while_gathering_runs_nothing_it_handed_back() -> None:
    """The owner is waiting for companions of a queued head when the service shuts down: close() hands the head's
    job back (it is answered shutting_down), so the owner must not run it after all."""

    async def main() -> tuple[list[Job], list[int]]:
        runs: list[int] = []

        def run(batch: Batch, on_step: Any) -> list[Any]:
            runs.append(len(batch.items))
            return [None] * len(batch.items)

        scheduler = _scheduler(run, lambda batch, results: None, window_s=1.0)
        scheduler.start()
        try:
            away = _job(2)  # its call ends and nobody reports it finished: its 2 images are being delivered
            scheduler.submit(away)
            while not runs:
                await asyncio.sleep(0.01)
            head = _job()
            scheduler.submit(head)  # 1 image < 2 away: the owner waits up to the 1 s window
            await asyncio.sleep(0.2)
            dropped = scheduler.close()
            await asyncio.sleep(1.2)  # past the window
            return dropped, runs
        finally:
            await asyncio.to_thread(scheduler.stop, 5)

    dropped, runs = asyncio.run(main())
    assert len(dropped) == 1
    assert runs == [2], runs


@pytest.mark.parametrize("taken_out", ["expired", "cancelled"])
def test_a_head_taken_out_while_the_owner_gathers_never_runs(taken_out: str) -> None:
    """As close() above, for one job: it waited past the queue timeout (expire() hands it back and the service
    answers it queue_timeout) or was cancelled (remove()) while the owner waited for its companions."""

    async def main() -> tuple[list[Job], list[list[Job]], Job]:
        runs: list[list[Job]] = []

        def run(batch: Batch, on_step: Any) -> list[Any]:
            runs.append([item.job for item in batch.items])
            return [None] * len(batch.items)

        scheduler = _scheduler(run, lambda batch, results: None, window_s=1.0)
        scheduler.start()
        try:
            scheduler.submit(_job(2))  # its 2 images are being delivered: the owner will wait for them
            while not runs:
                await asyncio.sleep(0.01)
            head = _job()
            scheduler.submit(head)
            await asyncio.sleep(0.2)  # the owner is gathering for `head`
            gone = scheduler.expire(0.1) if taken_out == "expired" else [head] * scheduler.remove(head)
            await asyncio.sleep(1.2)  # past the window
            return gone, runs, head
        finally:
            await asyncio.to_thread(scheduler.stop, 5)

    gone, runs, head = asyncio.run(main())
    assert gone == [head]
    assert len(runs) == 1 and head not in runs[0], runs


def test_a_jobs_queue_time_ends_when_the_owner_takes_it_not_when_the_loop_hears() -> None:
    """The event loop can hear of a start late (here it is blocked for 0.3 s; in the service, a GIL switch interval
    while the owner runs Python), and the job's queue_ms must not count that."""

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        heard: asyncio.Future[tuple[float, float]] = loop.create_future()

        def started(batch: Batch) -> None:
            job = batch.items[0].job
            heard.set_result((job.waited_at(batch.taken), job.waited))

        scheduler = _scheduler(lambda batch, on_step: [None], lambda batch, results: None, on_started=started)
        scheduler.start()
        try:
            scheduler.submit(_job(key=None))
            time.sleep(0.3)  # the loop is busy; the owner is not
            return await asyncio.wait_for(heard, 10)
        finally:
            scheduler.close()
            await asyncio.to_thread(scheduler.stop, 5)

    queued, heard_after = asyncio.run(main())
    assert heard_after >= 0.3
    assert queued < 0.1, queued


def test_a_batch_keeps_the_parameters_it_was_taken_with() -> None:
    """A cancel may end the job between the owner's take and the call's start, and the job's decoded inputs are then
    released (completion.release_if_done): the call must still get them, read under the lock at the take."""
    from PIL import Image

    from app.engine.jobs.items import GenerateParams, Setup, released

    source = Image.new("RGB", (64, 64))
    item = GenerateParams("p", None, None, None, 64, 64, 4, 5.0, 1, Setup("tiny"), kind="img2img", image=source)
    job = Job(kind="img2img", model="tiny", items=[item], batch_key=None, pixels=4096, steps=4)
    batch = Batch([Item(job, 0)])
    job.items = [released(p) for p in job.items]
    assert job.items[0].image is None and batch.params[0].image is source
