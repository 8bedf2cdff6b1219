"""Jobs: the unit of accepted work, from queued to one of three ends (succeeded, failed, cancelled).

A job holds one request's items (one per image, see items.py). The GPU owner's reports about it reach the event
loop through the scheduler (`call_soon_threadsafe`) and are applied by `engine/completion.py`; a job is only ever
mutated on the event loop (its `cancel_requested` flag, a threading.Event, is the one thing the owner reads).
Every accepted job ends in a terminal state with a reason, so nothing is ever lost silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from app.errors import NotFound
from app.storage.ids import check_id, new_id


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class JobFailure:
    """Why a job did not succeed: a stable type (the API's table gives it a status) and a message for people."""

    type: str
    message: str
    retry_after: float | None = None  # seconds, where waiting helps


@dataclass(frozen=True)
class ImageRecord:
    id: str
    seed: int
    width: int
    height: int


@dataclass(eq=False)  # a job is its identity: hashable, compared with `is`
class Job:
    kind: str  # "generate" | "refine"
    model: str
    items: list[Any]  # per-image parameters, run by the scheduler's runner
    batch_key: tuple[Any, ...] | None  # jobs with equal keys may share a pipeline call; None: always alone
    pixels: int  # per item, for the batch pixel budget
    steps: int  # denoising steps per item, for progress
    parent_id: str | None = None
    batch_cap: int | None = None  # most of its images one call may hold on this device (admission.py); None: any
    in_call: int = 0  # its images in the pipeline call now running (event loop's count, from the owner's reports)
    instance: str = ""  # the process that accepted it (heartbeat.py): its record names it, for readers elsewhere
    id: str = field(default_factory=new_id)
    status: JobStatus = JobStatus.QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    steps_done: int = 0  # image-steps: a batch of k of this job's images advances k per step
    images: list[ImageRecord] = field(default_factory=list)
    error: JobFailure | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # Its synchronous caller went away: nobody will learn its images' ids, so they are removed (completion.py).
    unclaimed: bool = False
    # A synchronous caller waits for its answer (service.wait): once answered, that client may come right back,
    # which the batcher counts on (scheduler.job_finished). Async jobs' clients poll instead.
    awaited: bool = False
    # Set from the event loop, read by the owner thread at each denoising step.
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _submitted_mono: float = field(default_factory=time.monotonic)

    @property
    def total_steps(self) -> int:
        return self.steps * len(self.items)

    @property
    def waited(self) -> float:
        return self.waited_at(time.monotonic())

    def waited_at(self, when: float) -> float:
        """Seconds from its submission to `when` (a time.monotonic() reading)."""
        return when - self._submitted_mono

    def touch(self) -> None:
        """Wake everyone waiting for a change (SSE streams, synchronous waiters)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float | None = None) -> None:
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def finish(self, status: JobStatus, error: JobFailure | None = None) -> bool:
        if self.status.terminal:
            return False
        self.status, self.error, self.finished = status, error, time.time()
        self.touch()
        return True

    def naming_stored(self, error: JobFailure) -> JobFailure:
        """`error`, saying which of the job's images were stored: a synchronous caller learns their ids only from
        it (a later call failed, the disk filled, a cancel or shutdown came between calls), or never finds them."""
        if not self.images:
            return error
        ids = ", ".join(r.id for r in self.images)
        done = f"{len(self.images)} of {len(self.items)} images had been stored: {ids}"
        return JobFailure(error.type, f"{error.message}; {done}", error.retry_after)

    def snapshot(self, position: int | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status.value,
            "model": self.model,
            "queue_position": position,
            "progress": {"step": self.steps_done, "total": self.total_steps},
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "timings": self.timings,
            "images": [vars(i) for i in self.images],
            "parent_id": self.parent_id,
            "error": None if self.error is None else {"type": self.error.type, "message": self.error.message},
        }


class JobRegistry:
    """Every job by id; finished ones are kept for `ttl` seconds (and at most `max_kept`), then forgotten."""

    def __init__(self, ttl: float, max_kept: int = 10_000):
        self.ttl = ttl
        self.max_kept = max_kept
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def add(self, job: Job) -> None:
        self.prune()
        self._jobs[job.id] = job

    def get(self, job_id: str) -> Job:
        self.prune()
        job = self._jobs.get(check_id(job_id))
        if job is None:
            raise NotFound(f"no job with id {job_id} (finished jobs are kept {self.ttl:g} s)", field="id")
        return job

    def active(self) -> list[Job]:
        return [j for j in self._jobs.values() if not j.status.terminal]

    def kept(self) -> list[Job]:
        """Every job held now, active and finished, oldest first; a snapshot, without pruning first."""
        return list(self._jobs.values())

    def prune(self) -> None:
        now = time.time()
        finished = [j for j in self._jobs.values() if j.status.terminal]
        excess = len(self._jobs) - self.max_kept
        for job in finished:  # oldest first: insertion order
            if excess > 0 or (job.finished is not None and now - job.finished > self.ttl):
                del self._jobs[job.id]
                excess -= 1
