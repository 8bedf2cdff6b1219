"""A batch's life after the queue, on the event loop: the GPU owner's four reports, and each image to the store.

The owner thread reports through the scheduler, which hops onto the event loop:
  1. `started`: the batch's jobs are running (queue time recorded).
  2. `step`: one denoising step, for every image of the batch (progress).
  3. `done`: one `Rendered` per image. Each image of a job still wanted is encoded and stored off the loop
     (`_store`); a job succeeds once all its images are stored, listed in seed order.
  4. `failed`: the pipeline raised; `classify` decides what that means, and every job of the batch ends.
Every job that reaches here ends: succeeded, failed with a reason, or cancelled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from app.config import Settings
from app.engine.gpu.runner import Rendered
from app.engine.gpu.scheduler import Batch, Interrupted
from app.engine.images import output
from app.engine.images.encoder import Encoder
from app.engine.jobs.items import released
from app.engine.jobs.job import ImageRecord, Job, JobFailure, JobStatus
from app.engine.metrics import Metrics
from app.errors import ServiceError, is_out_of_memory
from app.events.base import EventSink
from app.storage.base import ImageStore

logger = logging.getLogger(__name__)

Finish = Callable[[Job, JobStatus, JobFailure | None], None]
# A request's own mistake (a LoRA that does not fit) or an optional model that will not load says nothing about
# this replica's health: only other pipeline failures count towards /ready.
# Failures that say nothing about this replica's health, so they never count towards /ready's limit. An
# out-of-memory error is the request's size meeting the card: dtypes are restored and memory freed after it, and
# counting it would let three large requests take a replica out of a load balancer for good.
_NOT_THE_REPLICAS_FAULT = ("invalid_request", "model_load_failed", "out_of_memory")


def classify(exc: BaseException) -> tuple[JobStatus, JobFailure]:
    """The one place that decides what a pipeline or storage failure means for a job."""
    if isinstance(exc, Interrupted):
        return JobStatus.CANCELLED, JobFailure("cancelled", "cancelled while running")
    if isinstance(exc, ServiceError):  # first: a load that ran out of memory keeps its own message and hint
        # Without its retry_after: a job that failed is retried as a whole, after the API's default wait.
        return JobStatus.FAILED, JobFailure(exc.type, exc.message)
    if is_out_of_memory(exc):
        return JobStatus.FAILED, JobFailure("out_of_memory", "the GPU ran out of memory; retry or ask for less")
    return JobStatus.FAILED, JobFailure("generation_failed", f"the pipeline failed ({type(exc).__name__})")


class Completion:
    def __init__(
        self,
        settings: Settings,
        store: ImageStore,
        encoder: Encoder,
        events: EventSink,
        metrics: Metrics,
        *,
        finish: Finish,
        save: Callable[[Job], None],
        spawn: Callable[[Awaitable[Any]], None],
        queue_depth: Callable[[], int],
        free_memory: Callable[[], None],
        download_path: Callable[[str], str],
    ):
        self.settings, self.store, self.encoder, self.events, self.metrics = settings, store, encoder, events, metrics
        self._finish, self._save, self._spawn, self._queue_depth = finish, save, spawn, queue_depth
        self._free_memory, self._download_path = free_memory, download_path
        self.failures_in_a_row = 0
        self._storing: dict[Job, int] = {}  # images of a job being encoded and stored right now
        # How a job whose images are still being stored will end: its first failed write, or a failed later call.
        self._store_failed: dict[Job, tuple[JobStatus, JobFailure]] = {}

    def started(self, batch: Batch) -> None:
        now = time.time()
        for item in batch.items:
            item.job.in_call += 1
        self.metrics.batch_size.observe(len(batch.items))
        self.metrics.queue_depth.set(self._queue_depth())
        for job in batch.jobs:
            if job.started is None:
                job.started = now
                waited = job.waited_at(batch.taken)
                job.timings["queue_ms"] = round(waited * 1000, 2)
                self.metrics.queue_wait.observe(waited)
            if job.status is JobStatus.QUEUED:
                job.status = JobStatus.RUNNING
                job.touch()

    def step(self, batch: Batch) -> None:
        for item in batch.items:
            # At most the total: an ensemble's two second-order halves (Heun) may round up to one step more.
            item.job.steps_done = min(item.job.steps_done + 1, item.job.total_steps)
        for job in batch.jobs:
            job.touch()

    def done(self, batch: Batch, results: list[Rendered]) -> None:
        self.failures_in_a_row = 0
        for item in batch.items:
            item.job.in_call -= 1
        seconds = time.perf_counter() - batch.started
        self.metrics.inference.labels(batch.items[0].job.kind).observe(seconds)
        for job in batch.jobs:
            job.timings["inference_ms"] = round(job.timings.get("inference_ms", 0) + seconds * 1000, 2)
        for item, result in zip(batch.items, results, strict=True):
            job, image = item.job, result.image
            generated = {"job_id": job.id, "kind": job.kind, "model": job.model, "seed": job.items[item.index].seed}
            self.events.emit("image.generated", {**generated, "width": image.width, "height": image.height})
            if job.cancel_requested.is_set():
                self._finish(job, JobStatus.CANCELLED, JobFailure("cancelled", "cancelled while running"))
            elif not job.status.terminal:
                self._storing[job] = self._storing.get(job, 0) + 1  # counted now: siblings are spawned together
                self._spawn(self._store(job, item.index, result))

    def failed(self, batch: Batch, exc: BaseException) -> None:
        for item in batch.items:
            item.job.in_call -= 1
        status, error = classify(exc)
        if error.type == "out_of_memory":
            logger.warning("pipeline call ran out of device memory; memory freed: %s", exc)
            self._free_memory()
        elif status is JobStatus.FAILED and error.type not in _NOT_THE_REPLICAS_FAULT:
            self.failures_in_a_row += 1
            logger.warning("pipeline call failed (%s in a row): %s: %s", self.failures_in_a_row, error.type, exc)
        for job in batch.jobs:
            if job in self._storing:
                # Its images of an earlier call are still being stored: it ends once they are (_settle), so that
                # the error names them. Nothing more of it runs: the owner dropped its queued images already.
                self._store_failed.setdefault(job, (status, error))
            else:
                self._finish(job, status, error)

    async def disown(self, job: Job) -> bool:
        """Its synchronous caller went away, so nobody will learn the ids of its images: remove those stored, and
        those still being stored as they land (_store). Whether any was removed."""
        job.unclaimed = True
        stored, job.images = job.images, []
        for record in stored:
            await self._remove(record.id)
        if stored:
            logger.info("removed %d images of job %s: its client disconnected before the answer", len(stored), job.id)
        return bool(stored)

    async def _remove(self, image_id: str) -> None:
        try:
            await self.store.delete(image_id)
        except ServiceError as exc:
            logger.warning("could not remove image %s, which nobody was given: %s", image_id, exc.message)

    async def _store(self, job: Job, index: int, result: Rendered) -> None:
        try:
            stored = await output.encode_and_store(
                self.store, self.encoder, self.settings, job, index, result.image, result.scheduler
            )
        except Exception as exc:
            if isinstance(exc, ServiceError):
                logger.warning("storing an image of job %s failed: %s", job.id, exc.message)
            else:
                logger.exception("storing an image of job %s failed", job.id)
            self._store_failed.setdefault(job, classify(exc))
        else:
            if job.unclaimed:  # its caller is gone (disown): nobody would ever be given this id
                await self._remove(stored.record.id)
            else:
                self._add(job, stored)
                if job.status.terminal:  # it ended (cancelled, a later call failed) while this image was stored:
                    self._save(job)  # its record, already written, must list it too
        finally:
            self._storing[job] -= 1
            if not self._storing[job]:
                del self._storing[job]
        self._settle(job)
        self.release_if_done(job)

    def release_if_done(self, job: Job) -> None:
        """An ended job none of whose images is still being stored keeps its parameters, not its decoded images."""
        if job.status.terminal and job not in self._storing:
            job.items = [released(p) for p in job.items]

    def _add(self, job: Job, stored: output.Stored) -> None:
        record = stored.record
        self.events.emit("image.stored", self._stored_event(job, record), image=stored.png)
        job.timings["encode_ms"] = round(job.timings.get("encode_ms", 0) + stored.encode_s * 1000, 2)
        job.timings["store_ms"] = round(job.timings.get("store_ms", 0) + stored.store_s * 1000, 2)
        self.metrics.images.labels(job.kind).inc()
        job.images.append(record)
        seeds = [p.seed for p in job.items]  # distinct within a job (seed + i), so they give the order
        job.images.sort(key=lambda r: seeds.index(r.seed))

    def _settle(self, job: Job) -> None:
        """After each store: once none of the job's images is still being stored, it ends or waits for more.

        A failed write waits for its siblings' writes, so that the error can name every image that was stored:
        a synchronous caller learns their ids from it, or they would be stored and never found."""
        if job in self._storing:
            return
        failure = self._store_failed.pop(job, None)
        if job.status.terminal:
            return
        if failure is not None:
            status, error = failure
            self._finish(job, status, error)
        elif len(job.images) == len(job.items):
            self._finish(job, JobStatus.SUCCEEDED, None)
        else:
            job.touch()

    def _stored_event(self, job: Job, record: ImageRecord) -> dict[str, Any]:
        return {
            "image_id": record.id,
            "url": self._download_path(record.id),  # the API's route: the engine does not know its URLs
            "job_id": job.id,
            "kind": job.kind,
            "model": job.model,
            "seed": record.seed,
            "width": record.width,
            "height": record.height,
            "parent_id": job.parent_id,
        }
