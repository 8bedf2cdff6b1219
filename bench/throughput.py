"""Images per second: closed-loop HTTP clients against a server, and the bare pipeline at fixed batch sizes."""

from __future__ import annotations

import itertools
import resource
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import psutil

from bench.server import BenchServer
from bench.workload import CPU, BarePipeline, Seeds, Workload, request_body


@dataclass
class Throughput:
    config: str  # "batching on", "batching off", "bare pipeline"
    parallel: int  # concurrent HTTP clients, or the bare pipeline's batch size
    images: int
    seconds: float
    mean_batch: float  # images per pipeline call while measuring
    # CPU time spent meanwhile on this machine: the server's process tree (encode workers included) and the load
    # generator (this process), or for the bare pipeline this process alone
    cpu_s: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def cpu_ms_per_image(self) -> float:
        return self.cpu_s / self.images * 1000

    @property
    def cores(self) -> float:
        """CPU time ÷ wall time: how many cores the run kept busy."""
        return self.cpu_s / self.seconds


def process_cpu_s(pid: int | None = None) -> float:
    """User + system seconds of a process tree: every living process in it (all threads), plus what their exited
    and reaped children used (the kernel adds that to the parent's), so a worker that ends between two readings is
    still counted. This process alone (no children) by default."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    process = psutil.Process(pid)
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:  # exited between the listing and the reading: its parent reaps it into its own
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class Load:
    """`clients` threads, each with its own keep-alive connection, POSTing /generate back to back, a fresh seed
    each time. Bounded: it ends after `images` requests in all, or once stop() is called if `images` is None."""

    def __init__(self, url: str, clients: int, seeds: Seeds, images: int | None, workload: Workload = CPU) -> None:
        self.url, self.seeds, self.workload = url, seeds, workload
        self._left = images
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # The barrier's action runs once every client thread has made its httpx client, before any is let go
        self._ready = threading.Barrier(clients + 1, action=self._release)
        self._before_release: Callable[[], object] = lambda: None
        self._release_error: BaseException | None = None
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        self.started = 0.0  # perf_counter of the release
        self.done = 0
        self.last_done = 0.0  # perf_counter of the latest response
        self.errors: list[str] = []

    def start(self, before_release: Callable[[], object] = lambda: None) -> float:
        """Open every client, call `before_release` (nothing is sent yet), then release them together; returns the
        start time."""
        self._before_release = before_release
        for thread in self._threads:
            thread.start()
        try:
            self._ready.wait()
        except threading.BrokenBarrierError:
            # The hook failed (in whichever thread ran the action), or a client could not be made: say which
            self.join()
            raise RuntimeError("the load did not start") from self._release_error
        return self.started

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        for thread in self._threads:
            thread.join()
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} requests failed; first: {self.errors[0]}")

    def run(self, before_release: Callable[[], object] = lambda: None) -> float:
        """start() + join(); the seconds from the release to the last response."""
        started = self.start(before_release)
        self.join()
        return self.last_done - started

    def _release(self) -> None:
        try:
            self._before_release()
        except BaseException as exc:
            self._release_error = exc  # the barrier breaks: start() raises it
            raise
        self.started = time.perf_counter()

    def _take(self) -> bool:
        with self._lock:
            if self._stop.is_set() or self._left == 0:
                return False
            if self._left is not None:
                self._left -= 1
            return True

    def _client(self) -> None:
        try:
            client = httpx.Client(base_url=self.url, timeout=600)
        except BaseException as exc:
            self._release_error = exc  # start() raises it
            self._ready.abort()  # or every other party would wait for this one for ever
            return
        with client:
            try:
                self._ready.wait()
            except BaseException:  # broken, or this thread ran the hook that failed: start() raises why
                return
            while self._take():
                try:
                    response = client.post("/generate", json=request_body(self.seeds.next(), self.workload))
                    failure = None if response.status_code == 200 else f"{response.status_code} {response.text[:300]}"
                except httpx.HTTPError as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    if failure is not None:  # the whole load stops: numbers with failures in them mean nothing
                        self.errors.append(failure)
                        self._stop.set()
                        return
                    self.done += 1
                    self.last_done = time.perf_counter()


def measure_server(
    server: BenchServer,
    config: str,
    clients: int,
    images: int,
    warmup: int,
    seeds: Seeds,
    workload: Workload = CPU,
) -> Throughput:
    """Warm up with `warmup` rounds of `clients` requests, then time `images` requests."""
    if warmup:
        Load(server.url, clients, seeds, warmup * clients, workload).run()

    def cpu_s() -> float:  # the server's tree and the load generator
        return process_cpu_s(server.process.pid) + process_cpu_s()

    images_before, calls_before = server.batch_stats()
    cpu_before: list[float] = []
    # Counted from after the clients are made (loading CA certificates costs ~30 ms of CPU each), before any is let go
    seconds = Load(server.url, clients, seeds, images, workload).run(before_release=lambda: cpu_before.append(cpu_s()))
    cpu_used = cpu_s() - cpu_before[0]
    images_after, calls_after = server.batch_stats()
    mean_batch = (images_after - images_before) / max(calls_after - calls_before, 1)
    return Throughput(config, clients, images, seconds, mean_batch, cpu_used)


def measure_bare(bare: BarePipeline, batch: int, images: int, warmup: int, seeds: Seeds) -> Throughput:
    """`warmup` untimed calls, then images // batch timed calls of `batch` images each."""
    for _ in range(warmup):
        bare(seeds.take(batch))
    calls = max(1, images // batch)
    cpu_before, started = process_cpu_s(), time.perf_counter()
    for _ in range(calls):
        bare(seeds.take(batch))
    seconds, cpu_s = time.perf_counter() - started, process_cpu_s() - cpu_before
    return Throughput("bare pipeline", batch, calls * batch, seconds, float(batch), cpu_s)


Side = Callable[[int], Throughput]  # a timed run of that many images


def server_side(server: BenchServer, config: str, clients: int, seeds: Seeds, workload: Workload = CPU) -> Side:
    return lambda images: measure_server(server, config, clients, images, 0, seeds, workload)


def bare_side(bare: BarePipeline, batch: int, seeds: Seeds) -> Side:
    return lambda images: measure_bare(bare, batch, images, 0, seeds)


@dataclass
class Paired:
    """Runs of one side, each bracketed by runs of a reference (the bare pipeline, or the server with batching off):
    this machine's speed drifts by tens of percent within minutes, so a reference taken in another phase of the
    run (minutes away) moves the ratio more than anything the service does."""

    runs: list[Throughput]  # one per round
    references: list[Throughput]  # len(runs) + 1: before the first round, between rounds, after the last

    @property
    def ips(self) -> list[float]:
        return [run.images_per_s for run in self.runs]

    @property
    def reference_ips(self) -> list[float]:
        return [run.images_per_s for run in self.references]

    @property
    def cpu_ms(self) -> list[float]:
        return [run.cpu_ms_per_image for run in self.runs]

    @property
    def reference_cpu_ms(self) -> list[float]:
        return [run.cpu_ms_per_image for run in self.references]

    @property
    def cores(self) -> list[float]:
        return [run.cores for run in self.runs]

    @property
    def reference_cores(self) -> list[float]:
        return [run.cores for run in self.references]

    @property
    def mean_batch(self) -> float:
        """Images per pipeline call, the rounds' mean."""
        return statistics.mean(run.mean_batch for run in self.runs)

    @property
    def ratios(self) -> list[float]:
        """Each round against the mean of the reference rates just before and just after it."""
        return [ips / around for ips, around in zip(self.ips, _around(self.reference_ips), strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def cpu_ceilings(self) -> list[float]:
        """Per round, paired as `ratios` are: the reference's CPU per image around it ÷ the round's. With both
        sides CPU-bound on the same cores, that is the most the ratio can be."""
        return [around / ms for ms, around in zip(self.cpu_ms, _around(self.reference_cpu_ms), strict=True)]

    @property
    def cpu_ceiling(self) -> float:
        return statistics.median(self.cpu_ceilings)


def _around(references: list[float]) -> list[float]:
    """Per round, the mean of the reference values just before and just after it."""
    return [(before + after) / 2 for before, after in itertools.pairwise(references)]


def measure_paired(measured: Side, reference: Side, images: int, rounds: int, warmup_images: int) -> Paired:
    """reference, measured, reference, ..., reference: `rounds` measured runs of `images` images, each between two
    reference runs (a server sits idle while the other side runs). An untimed run of `warmup_images` of each first."""
    reference(warmup_images)
    measured(warmup_images)
    references, runs = [reference(images)], []
    for _ in range(rounds):
        runs.append(measured(images))
        references.append(reference(images))
    return Paired(runs, references)
