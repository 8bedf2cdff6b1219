"""The dynamic-batching policy: which queued images share a pipeline call, and how long the owner waits for more.

Pure decisions over plain data: no locks, no threads, no clock (callers pass the time left in). The scheduler
owns the queue, the condition variable and the waiting, and asks these functions what to do.

Selection (`batch_for`): the owner takes the image at the front of the queue (the head), then every queued image
with the same batch key (same model, size, steps, guidance, scheduler...), in queue order, up to `max_batch` images,
`max_batch_pixels` pixels and the head job's `batch_cap` (the most that fit in device memory, jobs/admission.py).
An image that would overflow the pixel budget is skipped, not a stopping point: a later, smaller one may still
join. Cancelled images never join, and cancelled images at the head of the queue are dropped before a head is
picked (`cancelled_at_head`). A job whose batch key is None always runs alone. Each image keeps its own prompt and
its own seeded generator, so what it looks like does not depend on what it was batched with. The head always goes
first, whatever waits behind it.

Fairness (`after_call`): jobs take turns, one call each. After a call, the images still queued of every job it
served move behind everyone else's, so a request for 8 images (8 calls where memory holds one) is interleaved
with the requests that came after it instead of making each wait all 8 calls (and time out in the queue).

Waiting (`wait_budget`, `images_away`, `keep_waiting`): a lone request on an idle GPU starts at once; otherwise
the owner may wait for companions, from when it picks the head, for at most:
- `window_s`, while the call would hold fewer images than are away (`images_away`: images that could share it, of
  jobs being encoded and stored with none of them queued, plus those of synchronous jobs answered within the window
  whose clients have not come back yet).
  That balances closed-loop clients. Without it, 8 clients split into an uneven pair of groups that take turns
  (1 and 7, 2 and 6: whoever came back within the wait, measured on 2 cores), and a call of 1 or 2 images costs
  almost what a call of 4 does there (per-call overhead), so the pair ran at 0.79-0.85x the bare batch-8 rate.
  Balanced groups (4 and 4) keep the owner busy with no wait at all, since each group returns while the other runs.
- 2.5 % (`WAIT_SHARE`) of the last batch's run time (never over `window_s`), while a client that was just
  answered has not come back: it is likely to within milliseconds. Before any batch has run, `window_s`.
- nothing, otherwise: jobs still being encoded are not waited for once the call is as big as they are.
The wait ends early when the batch is full or the scheduler is stopping, and is re-decided whenever a job is
submitted or finishes.

Back-pressure (`retry_after`): a full queue tells the caller to come back after roughly how many batches are
queued ahead, at least 1 s and at most 30 s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

WAIT_SHARE = 0.025  # the most of the last batch's run time spent waiting for a client just answered
RETRY_AFTER_MAX_S = 30


class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


class BatchJob(Protocol):
    """What the policy reads of a job (`app.engine.jobs.job.Job` is one)."""

    @property
    def batch_key(self) -> object | None: ...  # equal keys may share a call; None: always alone

    @property
    def pixels(self) -> int: ...  # per image

    @property
    def batch_cap(self) -> int | None: ...  # most images of this job that fit in one call; None: no limit

    @property
    def cancel_requested(self) -> CancelFlag: ...

    @property
    def items(self) -> Sequence[object]: ...  # one per image


class BatchItem(Protocol):
    """One queued image (`app.engine.gpu.scheduler.Item` is one)."""

    @property
    def job(self) -> BatchJob: ...


ItemT = TypeVar("ItemT", bound=BatchItem)


@dataclass(frozen=True)
class BatchLimits:
    max_batch: int  # most images in one call
    max_batch_pixels: int  # most pixels in one call (the head always goes, whatever its size)
    window_s: float  # the longest the owner waits for companions


def cancelled_at_head(pending: Iterable[BatchItem]) -> int:
    """How many images at the front of the queue belong to cancelled jobs (to drop before picking a head)."""
    count = 0
    for item in pending:
        if not item.job.cancel_requested.is_set():
            break
        count += 1
    return count


def batch_for(head: ItemT, pending: Iterable[ItemT], limits: BatchLimits) -> list[ItemT]:
    """The head, then the queued images (in queue order) that may share its call. `pending` may include head."""
    if head.job.batch_key is None:
        return [head]
    chosen, pixels = [head], head.job.pixels
    most = most_images(head, limits)
    for item in pending:
        if len(chosen) >= most:
            break
        if item is head or not may_join(head.job, item.job):
            continue
        if pixels + item.job.pixels > limits.max_batch_pixels:
            continue
        chosen.append(item)
        pixels += item.job.pixels
    return chosen


def may_join(head: BatchJob, other: BatchJob) -> bool:
    """Whether `other`'s images may share a call led by `head`'s (pixel budget and room aside)."""
    return other.batch_key == head.batch_key and not other.cancel_requested.is_set()


def after_call(pending: Iterable[ItemT], chosen: Iterable[ItemT]) -> list[ItemT]:
    """The queue once `chosen` has been taken for a call: the others in their order, then the rest of the jobs the
    call served (their round is over), each in its own order."""
    taken = {id(item) for item in chosen}
    served = {id(item.job) for item in chosen}
    rest = [item for item in pending if id(item) not in taken]
    return [i for i in rest if id(i.job) not in served] + [i for i in rest if id(i.job) in served]


def most_images(head: BatchItem, limits: BatchLimits) -> int:
    """The most images a call led by `head` may hold. Jobs sharing a key share a model and a size, so the head
    job's memory cap holds for all of them."""
    return min(limits.max_batch, head.job.batch_cap or limits.max_batch)


def wait_limit(window_s: float, last_batch_s: float) -> float:
    """The share of the last batch's run time the owner may spend waiting for a just-answered client;
    `last_batch_s` <= 0: no batch has run yet."""
    return window_s if last_batch_s <= 0 else min(window_s, WAIT_SHARE * last_batch_s)


def images_away(head: BatchJob, unfinished: Iterable[BatchJob], pending: Iterable[BatchItem]) -> int:
    """Images that could share the head's call (same batch key, not cancelled) of jobs other than the head's that
    are unfinished with none of their images queued: being encoded and stored, their clients still to be answered."""
    queued = {id(item.job) for item in pending}
    return sum(
        len(other.items)
        for other in unfinished
        if other is not head and id(other) not in queued and may_join(head, other)
    )


def wait_budget(chosen: int, away: int, answered: int, *, window_s: float, last_batch_s: float) -> float:
    """How long, from picking the head, the owner may wait for companions of a call of `chosen` images while
    `away` images are out (images_away, plus the images of `answered` jobs whose clients were just answered)."""
    if chosen < away:
        return window_s
    if answered:
        return wait_limit(window_s, last_batch_s)
    return 0.0


def keep_waiting(chosen: int, most: int, *, stopping: bool, remaining_s: float) -> bool:
    """Whether the owner should wait (up to `remaining_s`, what is left of `wait_budget`) for more images to join
    a batch of `chosen` (of at most `most`, see `most_images`)."""
    return chosen < most and not stopping and remaining_s > 0


def retry_after(pending: int, max_batch: int) -> int:
    """Seconds a refused caller should wait for a full queue: about the batches queued ahead, within [1, 30]."""
    return max(1, min(RETRY_AFTER_MAX_S, pending // max(max_batch, 1)))
