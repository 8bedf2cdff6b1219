"""bench.throughput: each service round is set against the bare runs just before and just after it, and CPU time is
counted for a whole process tree (the service's encode workers), exited children included."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.throughput import Paired, process_cpu_s

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def _paired(
    service_ips: list[float],
    bare_ips: list[float],
    service_cpu_ms: list[float] | None = None,
    bare_cpu_ms: list[float] | None = None,
) -> Paired:
    service_cpu = service_cpu_ms or [1.0] * len(service_ips)
    bare_cpu = bare_cpu_ms or [1.0] * len(bare_ips)
    return Paired(8, service_ips, bare_ips, 4.0, service_cpu, bare_cpu, [2.0] * len(service_ips), [2.0] * len(bare_ips))


def test_each_round_against_the_mean_of_its_two_neighbouring_bare_runs() -> None:
    # The machine slows down in the middle: bare 10 -> 6 -> 8 images/s.
    paired = _paired([7.2, 6.3], [10.0, 6.0, 8.0])
    assert paired.ratios == pytest.approx([7.2 / 8.0, 6.3 / 7.0])
    assert paired.ratio == pytest.approx((0.9 + 0.9) / 2)


def test_the_median_is_robust_to_one_disturbed_round() -> None:
    paired = _paired([9.0, 2.0, 9.0], [10.0] * 4)
    assert paired.ratio == pytest.approx(0.9)


def test_the_cpu_ceiling_pairs_each_round_with_its_neighbouring_bare_runs() -> None:
    # The machine slows down after the second round: the bare CPU per image rises with it, as the service's does.
    service, bare = [250.0, 250.0, 400.0], [200.0, 200.0, 300.0, 340.0]
    paired = _paired([8.0] * 3, [10.0] * 4, service_cpu_ms=service, bare_cpu_ms=bare)
    assert paired.cpu_ceilings == pytest.approx([0.8, 1.0, 0.8])
    assert paired.cpu_ceiling == pytest.approx(0.8)


def _tree(child_seconds: float) -> subprocess.Popen[str]:
    """A parent that only waits: its child burns `child_seconds` of CPU, exits and is reaped; then the parent says
    so and sleeps until killed."""
    parent = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {BURN.format(s=child_seconds)!r}])\n"
        "print('started', flush=True)\n"
        "child.wait()\n"
        "print('reaped', flush=True)\n"
        "time.sleep(60)\n"
    )
    return subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)


def test_a_tree_counts_a_child_that_exits_between_two_readings() -> None:
    proc = _tree(child_seconds=1.0)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "started\n"
        before = process_cpu_s(proc.pid)  # the child alive, counted by itself
        assert proc.stdout.readline() == "reaped\n"
        after = process_cpu_s(proc.pid)  # the child gone, counted in its parent's reaped children
        # Before the reading the child had spent at most its start-up (~0.1 s here) and what it had burnt so far.
        assert after - before > 0.5, (before, after)
        time.sleep(0.5)  # only the parent is left, asleep: wall time passes, CPU time does not
        assert process_cpu_s(proc.pid) - after < 0.05
    finally:
        proc.kill()
        proc.wait()


def test_this_process_counts_its_own_cpu_and_not_its_sleep() -> None:
    before = process_cpu_s()
    time.sleep(0.3)
    slept = process_cpu_s()
    assert slept - before < 0.05
    started = time.process_time()
    while time.process_time() - started < 0.2:
        pass
    assert process_cpu_s() - slept >= 0.19
