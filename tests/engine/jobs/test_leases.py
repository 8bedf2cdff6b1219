"""Replica leases: a lease lapses only after its term and the clock-skew margin; readers share reads, reread one
that looks lapsed before counting it, and remember a lost instance; the heartbeat never renews a lapsed one."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from app.engine.jobs.heartbeat import Heartbeat
from app.engine.jobs.leases import SKEW_S, Lease, Leases, Liveness, lease_name
from app.errors import StorageUnavailable
from app.storage.ids import new_id
from app.storage.local import LocalImageStore


class Clock:
    """Wall and monotonic time, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Counted:
    """The real store, its record reads counted (instrumentation)."""

    def __init__(self, store: LocalImageStore):
        self.store, self.reads = store, Counter[str]()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def get_record(self, name: str) -> bytes | None:
        self.reads[name] += 1
        return await self.store.get_record(name)


class Failing(Counted):
    """Fault injection: every record write and read fails while `down` is set."""

    down = True

    async def put_record(self, name: str, data: bytes) -> None:
        if self.down:
            raise StorageUnavailable("the image store failed (EIO)")
        await self.store.put_record(name, data)

    async def get_record(self, name: str) -> bytes | None:
        if self.down:
            raise StorageUnavailable("the image store failed (EIO)")
        return await super().get_record(name)


@pytest.fixture
async def store(tmp_path: Path) -> Counted:
    local = LocalImageStore(tmp_path)
    await local.open()
    return Counted(local)


def _lease(heartbeat: float, lease_s: float = 30.0, **kw: Any) -> Lease:
    return Lease("host-a", new_id(), started=heartbeat - 100, heartbeat=heartbeat, lease_s=lease_s, **kw)


async def _write(store: Counted, lease: Lease) -> None:
    await store.put_record(lease_name(lease.instance), lease.encode())


def test_a_lease_lapses_only_after_its_term_and_the_skew_margin() -> None:
    lease = _lease(heartbeat=100.0, lease_s=30.0)
    assert not lease.lapsed(100.0 + 30.0)
    assert not lease.lapsed(100.0 + 30.0 + SKEW_S - 0.01)  # a reader whose clock runs ahead does not end it early
    assert lease.lapsed(100.0 + 30.0 + SKEW_S + 0.01)
    assert _lease(heartbeat=100.0, stopped=100.0).lapsed(100.0)  # a graceful stop: at once
    assert Lease.decode(lease.encode()) == lease
    with pytest.raises(KeyError):
        Lease.decode(b'{"replica": "a"}')


async def test_readers_share_one_read_per_renewal_interval(store: Counted) -> None:
    clock = Clock()
    lease = _lease(heartbeat=clock.now, lease_s=30.0)
    await _write(store, lease)
    leases = Leases(store, 30.0, clock=clock, monotonic=clock)
    checks = await asyncio.gather(*(leases.check(lease.instance, since=clock.now) for _ in range(100)))
    assert {c.alive for c in checks} == {True} and checks[0].lease == lease
    assert store.reads[lease_name(lease.instance)] == 1  # one read in flight, shared by all 100
    clock.now += 9.9  # within a third of the term: nothing new to read
    assert (await leases.check(lease.instance, since=0)).alive is True
    assert store.reads[lease_name(lease.instance)] == 1
    clock.now += 0.2
    assert (await leases.check(lease.instance, since=0)).alive is True
    assert store.reads[lease_name(lease.instance)] == 2


async def test_a_lapsed_looking_lease_is_reread_before_it_counts_then_lost_for_good(store: Counted) -> None:
    clock = Clock()
    lease = _lease(heartbeat=clock.now, lease_s=3.0)
    await _write(store, lease)
    leases = Leases(store, 3.0, clock=clock, monotonic=clock)
    assert (await leases.check(lease.instance, since=0)).alive is True
    clock.now += 3 + SKEW_S + 0.5  # the cached lease looks lapsed, but it was renewed meanwhile
    renewed = Lease(lease.replica, lease.instance, lease.started, clock.now - 0.5, lease.lease_s)
    await _write(store, renewed)
    assert await leases.check(lease.instance, since=0) == Liveness(True, renewed)
    clock.now += 3 + SKEW_S + 0.5  # now it really lapsed
    lost = await leases.check(lease.instance, since=0)
    assert lost.alive is False and lost.lease == renewed
    reads = store.reads[lease_name(lease.instance)]
    await _write(store, Lease(lease.replica, lease.instance, lease.started, clock.now, lease.lease_s))
    assert (await leases.check(lease.instance, since=0)).alive is False  # a lapsed instance never comes back
    assert store.reads[lease_name(lease.instance)] == reads  # and is not read again


async def test_no_lease_yet_is_alive_only_for_a_job_younger_than_a_lease(store: Counted) -> None:
    clock = Clock()
    leases = Leases(store, 3.0, clock=clock, monotonic=clock)
    young, old = new_id(), new_id()
    assert (await leases.check(young, since=clock.now - 1)).alive is True  # its first renewal may be on its way
    assert await leases.check(old, since=clock.now - 3 - SKEW_S - 1) == Liveness(False, None)


async def test_a_store_that_fails_leaves_liveness_unknown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    local = LocalImageStore(tmp_path)
    await local.open()
    store = Failing(local)
    leases = Leases(store, 3.0)
    for _ in range(3):
        assert (await leases.check(new_id(), since=0)).alive is None
    assert len([r for r in caplog.records if "could not read replica leases" in r.getMessage()]) == 1


async def test_the_heartbeat_renews_and_a_graceful_stop_lapses_at_once(store: Counted) -> None:
    clock = Clock()
    beat = Heartbeat(store, "host-a", 3.0, clock=clock, monotonic=clock)
    await beat.stop()  # never started: writes nothing
    assert await store.get_record(lease_name(beat.instance)) is None
    beat.start()
    await asyncio.sleep(0.05)  # its first renewal, at once
    leases = Leases(store, 3.0, clock=clock, monotonic=clock)
    assert (await leases.check(beat.instance, since=0)).alive is True
    clock.now += 2.9
    await beat.beat()
    clock.now += 2.9  # the first renewal alone would have lapsed by now (its 3 s and the 2 s margin)
    assert (await leases.check(beat.instance, since=0)).alive is True
    await beat.stop()
    clock.now += beat.interval + 0.01  # the cached lease is stale: reread, it says stopped
    assert (await leases.check(beat.instance, since=0)).alive is False


async def test_a_renewal_landing_later_than_a_lease_takes_a_new_instance(
    store: Counted, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    beat = Heartbeat(store, "host-a", 3.0, clock=clock, monotonic=clock)
    await beat.beat()
    first = beat.instance
    clock.now += 2.0
    await beat.beat()
    assert beat.instance == first  # on time
    clock.now += 3.5  # nothing landed for longer than a lease (a stalled loop, a slow store): it may look lapsed
    await beat.beat()
    assert beat.instance != first
    assert any("new jobs run under instance" in r.getMessage() for r in caplog.records)


async def test_a_failing_store_is_logged_once_per_outage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    local = LocalImageStore(tmp_path)
    await local.open()
    store = Failing(local)
    beat = Heartbeat(store, "host-a", 3.0)
    for _ in range(5):
        await beat.beat()  # never raises
    store.down = False
    await beat.beat()
    messages = [r.getMessage() for r in caplog.records if r.name == "app.engine.jobs.heartbeat"]
    assert len([m for m in messages if "could not renew" in m]) == 1
    assert len([m for m in messages if "renewed this replica's lease again" in m]) == 1
    assert await local.get_record(lease_name(beat.instance)) is not None
