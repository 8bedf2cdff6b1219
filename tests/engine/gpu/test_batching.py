"""The dynamic-batching policy, decision by decision: plain data in, plain data out (no server, no threads)."""

from __future__ import annotations

from typing import Any

import pytest

from app.engine.gpu.batching import (
    WAIT_SHARE,
    BatchLimits,
    after_call,
    batch_for,
    cancelled_at_head,
    images_away,
    keep_waiting,
    most_images,
    retry_after,
    wait_budget,
    wait_limit,
)
from app.engine.gpu.scheduler import Item
from app.engine.jobs.job import Job

KEY = ("tiny", 64, 64, 4)
LIMITS = BatchLimits(max_batch=4, max_batch_pixels=4 * 4096, window_s=0.05)


def _job(images: int = 1, *, key: tuple[Any, ...] | None = KEY, pixels: int = 4096, cancelled: bool = False) -> Job:
    job = Job(kind="generate", model="tiny", items=[object()] * images, batch_key=key, pixels=pixels, steps=4)
    if cancelled:
        job.cancel_requested.set()
    return job


def _queue(*jobs: Job) -> list[Item]:
    return [Item(job, i) for job in jobs for i in range(len(job.items))]


def _names(chosen: list[Item], names: dict[int, str]) -> list[str]:
    return [f"{names[id(item.job)]}{item.index}" for item in chosen]


# --- which images join the head's call -------------------------------------------------------------------------
def test_head_first_then_queue_order() -> None:
    a, b, c = _job(), _job(2), _job()
    queue = _queue(a, b, c)
    names = {id(a): "a", id(b): "b", id(c): "c"}
    assert _names(batch_for(queue[0], queue, LIMITS), names) == ["a0", "b0", "b1", "c0"]


def test_oldest_goes_first_nothing_starves() -> None:
    """A full batch of newer matching work never displaces the oldest image, even a lone, different one."""
    old = _job(key=("other",))
    newer = [_job() for _ in range(8)]
    queue = _queue(old, *newer)
    assert batch_for(queue[0], queue, LIMITS) == [queue[0]]  # the head runs, alone: nothing else matches it
    rest = queue[1:]
    assert batch_for(rest[0], rest, LIMITS) == rest[:4]  # then the next oldest four


def test_key_mismatch_excluded() -> None:
    a, other, b, none = _job(), _job(key=("tiny", 128, 128, 4)), _job(), _job(key=None)
    queue = _queue(a, other, b, none)
    assert batch_for(queue[0], queue, LIMITS) == [queue[0], queue[2]]


def test_batch_key_none_runs_alone() -> None:
    alone, twin = _job(key=None), _job(key=None)
    queue = _queue(alone, twin)
    assert batch_for(queue[0], queue, LIMITS) == [queue[0]]
    many = _queue(_job(3, key=None))
    assert batch_for(many[0], many, LIMITS) == [many[0]]  # not even with its own other images


def test_pixel_budget_skips_too_large_but_later_small_one_joins() -> None:
    limits = BatchLimits(max_batch=8, max_batch_pixels=10_000, window_s=0.05)
    head, big, small, another = _job(pixels=4000), _job(pixels=7000), _job(pixels=5000), _job(pixels=2000)
    queue = _queue(head, big, small, another)
    chosen = batch_for(queue[0], queue, limits)
    assert chosen == [queue[0], queue[2]]  # 4000 + 5000 = 9000; big (11000) skipped; another would be 11000
    assert sum(item.job.pixels for item in chosen) == 9000


def test_head_runs_even_over_the_pixel_budget() -> None:
    limits = BatchLimits(max_batch=8, max_batch_pixels=1000, window_s=0.05)
    queue = _queue(_job(pixels=5000), _job(pixels=10))
    assert batch_for(queue[0], queue, limits) == [queue[0]]


def test_max_batch_cap() -> None:
    queue = _queue(_job(3), _job(3))
    assert batch_for(queue[0], queue, LIMITS) == queue[:4]
    one = BatchLimits(max_batch=1, max_batch_pixels=10**9, window_s=0.05)
    assert batch_for(queue[0], queue, one) == [queue[0]]


def test_memory_cap_of_the_head_job_limits_the_call() -> None:
    """Admission caps how many images of a size fit in one call on this device; the batcher never forms more."""
    capped = _job(3)
    capped.batch_cap = 2
    queue = _queue(capped, _job())
    assert batch_for(queue[0], queue, LIMITS) == queue[:2]
    assert most_images(queue[0], LIMITS) == 2
    assert most_images(_queue(_job())[0], LIMITS) == LIMITS.max_batch
    assert not keep_waiting(2, most_images(queue[0], LIMITS), stopping=False, remaining_s=1.0)


def test_cancelled_inside_the_queue_never_joins() -> None:
    a, gone, b = _job(), _job(2, cancelled=True), _job()
    queue = _queue(a, gone, b)
    assert batch_for(queue[0], queue, LIMITS) == [queue[0], queue[3]]


def test_head_not_in_pending_is_still_first_and_counted() -> None:
    head, *rest = _queue(_job(), _job(), _job())
    limits = BatchLimits(max_batch=2, max_batch_pixels=10**9, window_s=0.05)
    assert batch_for(head, rest, limits) == [head, rest[0]]


# --- cancelled images at the head of the queue -----------------------------------------------------------------
def test_cancelled_at_head_counts_only_the_leading_run() -> None:
    queue = _queue(_job(2, cancelled=True), _job(cancelled=True), _job(), _job(cancelled=True))
    assert cancelled_at_head(queue) == 3
    assert cancelled_at_head(queue[3:]) == 0
    assert cancelled_at_head(_queue(_job(cancelled=True))) == 1
    assert cancelled_at_head([]) == 0


# --- how long to wait --------------------------------------------------------------------------------------------
def test_wait_limit_without_a_last_batch_is_the_window() -> None:
    assert wait_limit(0.05, 0.0) == 0.05
    assert wait_limit(0.3, -1.0) == 0.3


def test_wait_limit_is_a_share_of_the_last_batch() -> None:
    assert WAIT_SHARE == 0.025
    assert wait_limit(0.05, 1.0) == pytest.approx(0.025)  # 2.5 % of a 1 s batch, under the window
    assert wait_limit(0.05, 10.0) == 0.05  # the window caps a long batch's share (0.25 s)


def _budget(chosen: int, away: int, answered: int = 0, last_batch_s: float = 1.0) -> float:
    return wait_budget(chosen, away, answered, window_s=0.05, last_batch_s=last_batch_s)


def test_a_call_smaller_than_what_is_away_waits_the_whole_window() -> None:
    """Balancing closed-loop clients: 2 queued while 6 are being delivered waits for some of the 6."""
    assert _budget(2, 6) == 0.05
    assert _budget(1, 2) == 0.05
    assert _budget(3, 4, answered=1) == 0.05  # the larger reason wins


def test_once_as_big_as_what_is_away_only_just_answered_clients_are_waited_for() -> None:
    assert _budget(4, 4) == 0.0  # the other group is still being encoded: it returns while this call runs
    assert _budget(6, 2) == 0.0
    assert _budget(1, 0) == 0.0  # a lone request on an idle GPU starts at once
    assert _budget(4, 4, answered=1) == pytest.approx(0.025)  # 2.5 % of the last (1 s) batch
    assert _budget(4, 4, answered=1, last_batch_s=0.0) == 0.05  # no batch yet: the window


# --- whether to keep waiting -------------------------------------------------------------------------------------
def _keep(chosen: int, *, stopping: bool = False, remaining_s: float = 0.01) -> bool:
    return keep_waiting(chosen, LIMITS.max_batch, stopping=stopping, remaining_s=remaining_s)


def test_keep_waiting_only_while_every_condition_holds() -> None:
    assert _keep(1) is True
    assert _keep(3) is True
    assert _keep(4) is False  # full
    assert _keep(5) is False
    assert _keep(1, stopping=True) is False
    assert _keep(1, remaining_s=0.0) is False  # the budget is spent (or was 0: nothing to wait for)
    assert _keep(1, remaining_s=-0.5) is False


def test_images_away_are_unfinished_jobs_with_nothing_queued() -> None:
    head, back, away, pair = _job(), _job(), _job(), _job(2)
    queue = _queue(head, back)
    assert images_away(head, [head], queue) == 0  # only itself
    assert images_away(head, [head, back], queue) == 0  # the other is already back in the queue
    assert images_away(head, [head, back, away], queue) == 1  # away's image is being delivered
    assert images_away(head, [head, away, pair], queue) == 3  # counted in images: a batch counts images
    assert images_away(head, [], queue) == 0
    assert images_away(head, [head], []) == 0  # its own job never counts, queued or not
    other_size, gone, alone = _job(key=("tiny", 128, 128, 4)), _job(cancelled=True), _job(key=None)
    assert images_away(head, [head, other_size, gone, alone], queue) == 0  # none of them could join its call


# --- Retry-After for a full queue --------------------------------------------------------------------------------
def test_retry_after_bounds() -> None:
    assert retry_after(0, 8) == 1  # at least 1
    assert retry_after(7, 8) == 1
    assert retry_after(24, 8) == 3  # about the batches queued ahead
    assert retry_after(10_000, 8) == 30  # at most 30
    assert retry_after(5, 1) == 5
    assert retry_after(5, 0) == 5  # a zero max_batch counts as 1


# --- fairness: jobs take turns -----------------------------------------------------------------------------------
def test_after_a_call_the_served_jobs_rest_goes_behind_everyone_else() -> None:
    a, b, c = _job(3), _job(1), _job(2)
    queue = _queue(a, b, c)
    names = {id(a): "a", id(b): "b", id(c): "c"}
    assert _names(after_call(queue, [queue[0]]), names) == ["b0", "c0", "c1", "a1", "a2"]
    # A call that served two jobs ends both their rounds; each keeps its own order.
    assert _names(after_call(queue, [queue[0], queue[4]]), names) == ["b0", "a1", "a2", "c1"]
    assert after_call(queue, queue) == []


def test_taking_turns_serves_every_job_before_any_job_twice() -> None:
    a, b, c = _job(3), _job(1), _job(2)
    queue = _queue(a, b, c)
    names = {id(a): "a", id(b): "b", id(c): "c"}
    order = []
    while queue:
        head = queue[0]
        order.append(_names([head], names)[0])
        queue = after_call(queue, [head])
    assert order == ["a0", "b0", "c0", "a1", "c1", "a2"]
