"""bench.throughput: each service round is set against the bare runs just before and just after it, and CPU time is
counted for a process with its children (the service's encode workers)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.throughput import Paired, process_cpu_s

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def _paired(service_ips: list[float], bare_ips: list[float], **cpu: list[float]) -> Paired:
    service_cpu, bare_cpu = cpu.get("service_cpu_ms", [1.0]), cpu.get("bare_cpu_ms", [1.0])
    return Paired(8, service_ips, bare_ips, 4.0, service_cpu, bare_cpu)


def test_each_round_against_the_mean_of_its_two_neighbouring_bare_runs() -> None:
    # The machine slows down in the middle: bare 10 -> 6 -> 8 images/s.
    paired = _paired([7.2, 6.3], [10.0, 6.0, 8.0])
    assert paired.ratios == pytest.approx([7.2 / 8.0, 6.3 / 7.0])
    assert paired.ratio == pytest.approx((0.9 + 0.9) / 2)


def test_the_median_is_robust_to_one_disturbed_round() -> None:
    paired = _paired([9.0, 2.0, 9.0], [10.0] * 4)
    assert paired.ratio == pytest.approx(0.9)


def test_the_cpu_bound_is_bare_over_service_cpu_per_image_by_medians() -> None:
    paired = _paired([8.0] * 3, [10.0] * 4, service_cpu_ms=[240.0, 250.0, 900.0], bare_cpu_ms=[200.0, 210.0, 205.0])
    assert paired.cpu_bound == pytest.approx(205.0 / 250.0)


def test_a_process_cpu_time_includes_its_childrens() -> None:
    # The parent sleeps; only its child burns CPU, as the service's encode workers do beside its event loop.
    parent = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {BUSY.format(s=0.6)!r}])\n"
        "print('started', flush=True)\n"
        "child.wait()\ntime.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "started\n"
        before = process_cpu_s(proc.pid)
        time.sleep(0.4)  # the child is part way through its 0.6 s of CPU
        during = process_cpu_s(proc.pid)
        assert during - before > 0.2, (before, during)
    finally:
        proc.kill()
        proc.wait()


def test_this_process_cpu_time_counts_its_own_work() -> None:
    before = process_cpu_s()
    started = time.process_time()
    while time.process_time() - started < 0.2:
        pass
    assert process_cpu_s() - before >= 0.19
