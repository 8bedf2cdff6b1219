"""bench.throughput: each service round is set against the bare runs just before and just after it, and CPU time is
counted for a whole process tree (the service's encode workers), exited children included."""

from __future__ import annotations

import http.server
import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest

from bench.throughput import Load, Paired, Side, Throughput, measure_paired, process_cpu_s
from bench.workload import Seeds

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def _run(ips: float, cpu_ms: float) -> Throughput:
    """A run of 10 images at `ips` images/s using `cpu_ms` of CPU per image."""
    seconds = 10 / ips
    return Throughput("run", 8, 10, seconds, 4.0, cpu_ms * 10 / 1000)


def _paired(
    service_ips: list[float],
    bare_ips: list[float],
    service_cpu_ms: list[float] | None = None,
    bare_cpu_ms: list[float] | None = None,
) -> Paired:
    service_cpu = service_cpu_ms or [1.0] * len(service_ips)
    bare_cpu = bare_cpu_ms or [1.0] * len(bare_ips)
    return Paired(
        [_run(ips, ms) for ips, ms in zip(service_ips, service_cpu, strict=True)],
        [_run(ips, ms) for ips, ms in zip(bare_ips, bare_cpu, strict=True)],
    )


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


def test_paired_runs_alternate_reference_first_and_last_after_one_untimed_run_of_each() -> None:
    calls: list[tuple[str, int]] = []

    def side(name: str) -> Side:
        def run(images: int) -> Throughput:
            calls.append((name, images))
            return _run(float(len(calls)), 1.0)

        return run

    paired = measure_paired(side("measured"), side("reference"), images=48, rounds=3, warmup_images=8)
    assert calls == [
        ("reference", 8),
        ("measured", 8),
        *[("reference", 48), ("measured", 48)] * 3,
        ("reference", 48),
    ]
    assert paired.ips == [4.0, 6.0, 8.0]  # the timed runs only: calls 4, 6, 8
    assert paired.reference_ips == [3.0, 5.0, 7.0, 9.0]
    assert paired.ratios == pytest.approx([4 / 4, 6 / 6, 8 / 8])


class _Recorder(http.server.BaseHTTPRequestHandler):
    arrivals: ClassVar[list[float]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).arrivals.append(time.perf_counter())
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    """A server on 127.0.0.1 that answers every POST at once, noting when each arrived; yields its URL."""
    _Recorder.arrivals = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_load_calls_its_hook_once_clients_are_made_before_any_request_and_times_from_after_it(
    recorder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[float] = []

    class Client(httpx.Client):
        def __init__(self, **kwargs: Any) -> None:
            time.sleep(0.05)  # as loading CA certificates takes a while: the hook must wait for every client
            super().__init__(**kwargs)
            made.append(time.perf_counter())

    monkeypatch.setattr(httpx, "Client", Client)  # as bench.throughput reads it
    hooked: list[float] = []

    def hook() -> None:  # slow, as reading a process tree's CPU can be: none of it may count in the run's seconds
        hooked.append(time.perf_counter())
        time.sleep(1.0)

    load = Load(recorder, 4, Seeds(), images=12)
    seconds = load.run(before_release=hook)
    assert len(hooked) == 1 and len(made) == 4 and max(made) < hooked[0]  # called once every client was made
    hook_ended = hooked[0] + 1.0
    assert len(_Recorder.arrivals) == 12 and min(_Recorder.arrivals) > hook_ended  # and before any request
    assert load.started >= hook_ended
    assert 0 < seconds < 1.0, seconds


def test_a_failing_hook_stops_the_load_and_says_why(recorder: str) -> None:
    def hook() -> None:
        raise ValueError("psutil could not read the server")

    with pytest.raises(ValueError, match="could not read"):  # raised where it ran, or as the cause in start()
        try:
            Load(recorder, 4, Seeds(), images=12).run(before_release=hook)
        except RuntimeError as exc:
            assert exc.__cause__ is not None
            raise exc.__cause__ from None
    assert _Recorder.arrivals == []


def test_a_client_that_cannot_be_made_stops_the_load_instead_of_hanging_it(
    recorder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = itertools.count()

    class Client(httpx.Client):
        def __init__(self, **kwargs: Any) -> None:
            if next(made) == 2:
                raise OSError("no CA bundle")
            super().__init__(**kwargs)

    monkeypatch.setattr(httpx, "Client", Client)  # as bench.throughput reads it
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            Load(recorder, 4, Seeds(), images=12).run()
        except BaseException as exc:
            failure.append(exc)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(10), "the load waits for ever on a client that was never made"
    assert isinstance(failure[0], RuntimeError) and isinstance(failure[0].__cause__, OSError), failure
    assert _Recorder.arrivals == []
