"""The single owner of the GPU: a bounded queue, dynamic batching, and one thread that runs every pipeline call.

HTTP handlers never touch a pipeline. They submit jobs (or, for loads, `await scheduler.call(fn)`) and await;
the event loop stays free while the model works.

Batching: the policy (which images share a call, how long to wait for more, when to come back) is pure functions in
`app.engine.gpu.batching`, documented there; the scheduler owns the queue, the lock and the waiting.

Threading: `_cv` guards the pending queue and internal calls. Everything the owner learns about a job (started,
progress, images, failure) is handed to the event loop with `call_soon_threadsafe`; job objects are only
mutated there (the cancel flag, a threading.Event, is the one thing the owner reads directly).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.engine.gpu import batching
from app.engine.jobs.job import Job, JobStatus
from app.errors import ServiceError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class QueueFull(ServiceError):
    type = "queue_full"


class ShuttingDown(ServiceError):
    type = "shutting_down"


class Interrupted(Exception):
    """Raised inside the step callback when every job in the running batch was cancelled."""


@dataclass(frozen=True)
class Timed(Generic[T]):
    value: T
    queue_s: float  # submitted -> started on the owner thread
    run_s: float  # started -> finished


@dataclass(frozen=True)
class Item:
    job: Job
    index: int  # which of the job's images


@dataclass
class Batch:
    items: list[Item]
    started: float = field(default_factory=time.perf_counter)
    # When the owner took it (monotonic, as jobs' submission times): a job's queue time ends here, not when the
    # event loop hears of it, which can be a GIL switch interval (5 ms) later while the owner runs Python.
    taken: float = field(default_factory=time.monotonic)
    # Each item's parameters, read when the owner took it, with the lock held: a job that ends (a cancel) before
    # the call starts has its decoded inputs released (completion.release_if_done), but this call still has them.
    params: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.params:
            self.params = [item.job.items[item.index] for item in self.items]

    @property
    def jobs(self) -> list[Job]:
        return list(dict.fromkeys(item.job for item in self.items))


@dataclass(frozen=True)
class _Answered:
    at: float  # time.monotonic() when the job ended
    images: int
    batch_key: object


@dataclass
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    submitted: float


# runner(batch, on_step) -> one result per item (the engine's Rendered), in order. Runs on the owner thread.
RunBatch = Callable[[Batch, Callable[[], None]], list[Any]]


class Scheduler:
    def __init__(
        self,
        runner: RunBatch,
        *,
        max_queue: int,
        max_batch: int,
        max_batch_pixels: int,
        window_s: float,
        on_started: Callable[[Batch], None],
        on_step: Callable[[Batch], None],
        on_done: Callable[[Batch, list[Any]], None],
        on_error: Callable[[Batch, BaseException], None],
    ):
        self._runner = runner
        self.max_queue, self.max_batch, self.max_batch_pixels, self.window_s = (
            max_queue,
            max_batch,
            max_batch_pixels,
            window_s,
        )
        self._on_started, self._on_step, self._on_done, self._on_error = on_started, on_step, on_done, on_error
        self._cv = threading.Condition()
        self._pending: deque[Item] = deque()
        self._calls: deque[_Call] = deque()
        self._closed = False
        self._stop = False
        self._busy_s = 0.0
        self._last_batch_s = 0.0
        self._unfinished: set[Job] = set()  # submitted and not yet reported finished
        # Synchronous jobs that succeeded within the window: their clients may be on their way back. A submit takes
        # the oldest of its batch key off, as if it were that client's (new clients come rarely beside returning ones).
        self._answered: deque[_Answered] = deque()
        self._born = time.perf_counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run_forever, name="gpu-owner", daemon=True)

    # --- lifecycle (event loop) --------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def close(self) -> list[Job]:
        """Stop accepting work; hand back the jobs that were still queued so the caller can answer them."""
        with self._cv:
            self._closed = True
            dropped = list(dict.fromkeys(item.job for item in self._pending))
            self._pending.clear()
            self._cv.notify_all()
        return dropped

    def stop(self, timeout: float) -> bool:
        """Let the running batch finish (up to `timeout`), then end the owner thread. True if it ended."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- submitting (event loop) -------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._cv:
            if self._closed:
                raise ShuttingDown("the service is shutting down; retry on another replica", retry_after=1)
            free = self.max_queue - len(self._pending)
            if len(job.items) > free:
                raise QueueFull(
                    f"the queue is full ({self.max_queue} images waiting); retry shortly",
                    retry_after=self._retry_after(),
                )
            self._pending.extend(Item(job, i) for i in range(len(job.items)))
            self._unfinished.add(job)
            self._forget_answered(time.monotonic())
            back = next((a for a in self._answered if a.batch_key == job.batch_key), None)
            if back is not None:
                self._answered.remove(back)
            self._cv.notify_all()

    async def call(self, fn: Callable[..., T], *args: Any) -> Timed[T]:
        """Run `fn` on the owner thread ahead of queued jobs (loads: they must not race a generation)."""
        future: asyncio.Future[Timed[T]] = asyncio.get_running_loop().create_future()
        with self._cv:
            if self._stop:
                raise ShuttingDown("the service is shutting down")
            self._calls.append(_Call(fn, args, future, time.perf_counter()))
            self._cv.notify_all()
        return await future

    def remove(self, job: Job) -> bool:
        """Take a job's images out of the queue. False if none were queued (it is running or done)."""
        with self._cv:
            before = len(self._pending)
            self._pending = deque(item for item in self._pending if item.job is not job)
            return len(self._pending) != before

    def expire(self, deadline_s: float) -> list[Job]:
        """Take out jobs that waited longer than the deadline without starting; they must never run."""
        with self._cv:
            stale = [
                j for j in dict.fromkeys(i.job for i in self._pending) if j.started is None and j.waited > deadline_s
            ]
            if stale:
                dead = set(map(id, stale))
                self._pending = deque(item for item in self._pending if id(item.job) not in dead)
        return stale

    # --- introspection -----------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._pending)

    def position(self, job: Job) -> int | None:
        """Images queued ahead of this job's first waiting image (0: next), None if none is waiting."""
        with self._cv:
            for ahead, item in enumerate(self._pending):
                if item.job is job:
                    return ahead
        return None

    def busy_share(self) -> float:
        return self._busy_s / max(time.perf_counter() - self._born, 1e-9)

    def _retry_after(self) -> int:
        return batching.retry_after(len(self._pending), self.max_batch)

    @property
    def _limits(self) -> batching.BatchLimits:
        return batching.BatchLimits(self.max_batch, self.max_batch_pixels, self.window_s)

    # --- the owner thread --------------------------------------------------------------------------
    def _run_forever(self) -> None:
        while True:
            with self._cv:
                while not (self._calls or self._pending or self._stop):
                    self._cv.wait()
                call = self._calls.popleft() if self._calls else None
                batch = None if call is not None or not self._pending else self._take_batch()
                if call is None and batch is None and self._stop:
                    return
            started = time.perf_counter()
            if call is not None:
                self._run_call(call)
            elif batch is not None:
                self._run_batch(batch)
            self._busy_s += time.perf_counter() - started

    def _take_batch(self) -> Batch | None:
        """Called with the lock held. Picks the oldest runnable image and what may share its call."""
        for _ in range(batching.cancelled_at_head(self._pending)):
            self._pending.popleft()
        if not self._pending:
            return None
        head = self._pending[0]
        chosen = [head]
        if head.job.batch_key is not None:
            chosen = self._gather(head)
            if self._closed:  # closed while gathering: close() handed the queued jobs (the head's too) back
                return None
            # The lock is released while gathering: expire() and remove() may have taken images out meanwhile
            # (a job answered queue_timeout or cancelled), the head's too. Those must never run.
            queued = {id(item) for item in self._pending}
            chosen = [item for item in chosen if id(item) in queued]
            if not chosen:
                return None
        self._pending = deque(batching.after_call(self._pending, chosen))
        return Batch(chosen)

    def _gather(self, head: Item) -> list[Item]:
        """Wait (lock held, released while waiting) for images that may join the head's call.

        How long is `batching.wait_budget`, re-decided after every submit and finish.
        """
        limits = self._limits
        picked = time.monotonic()
        chosen = batching.batch_for(head, self._pending, limits)
        most = batching.most_images(head, limits)
        while True:
            now = time.monotonic()
            self._forget_answered(now)
            answered = [a for a in self._answered if a.batch_key == head.job.batch_key]
            away = batching.images_away(head.job, self._unfinished, self._pending) + sum(a.images for a in answered)
            budget = batching.wait_budget(
                len(chosen), away, len(answered), window_s=limits.window_s, last_batch_s=self._last_batch_s
            )
            remaining = picked + budget - now
            stopping = self._stop or self._closed
            if not batching.keep_waiting(len(chosen), most, stopping=stopping, remaining_s=remaining):
                break
            self._cv.wait(remaining)  # submit(), job_finished() and close() notify
            chosen = batching.batch_for(head, self._pending, limits)
        return chosen

    def _forget_answered(self, now: float) -> None:
        """Lock held. Clients answered longer ago than the window are not coming back soon."""
        while self._answered and now - self._answered[0].at > self.window_s:
            self._answered.popleft()

    def job_finished(self, job: Job) -> None:
        """The service reports every job's end, so the batcher knows whose clients may come back."""
        with self._cv:
            if job in self._unfinished:
                self._unfinished.discard(job)
                if job.awaited and job.status is JobStatus.SUCCEEDED and job.batch_key is not None:
                    self._answered.append(_Answered(time.monotonic(), len(job.items), job.batch_key))
            self._cv.notify_all()

    def _to_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the process is exiting
            logger.debug("event loop closed; dropped %s", getattr(fn, "__name__", fn))

    def _run_batch(self, batch: Batch) -> None:
        self._to_loop(self._on_started, batch)

        def on_step() -> None:
            if all(job.cancel_requested.is_set() for job in batch.jobs):
                raise Interrupted
            self._to_loop(self._on_step, batch)

        try:
            images = self._runner(batch, on_step)
            self._last_batch_s = time.perf_counter() - batch.started
        except BaseException as exc:  # every failure is handed to the service, which decides what it means
            # Every job of a failed call fails as a whole: its images still queued go now, before this thread
            # takes its next batch (the loop hears of the failure later, when one of them may be running).
            failed = {id(job) for job in batch.jobs}
            with self._cv:
                self._pending = deque(item for item in self._pending if id(item.job) not in failed)
            self._to_loop(self._on_error, batch, exc)
            return
        self._to_loop(self._on_done, batch, images)

    def _run_call(self, call: _Call) -> None:
        started = time.perf_counter()
        try:
            value = Timed(call.fn(*call.args), started - call.submitted, time.perf_counter() - started)
        except BaseException as exc:
            self._to_loop(_settle, call.future, None, exc)
            return
        self._to_loop(_settle, call.future, value, None)


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
