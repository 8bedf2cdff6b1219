"""Images per second: closed-loop HTTP clients against a server, and the bare pipeline at fixed batch sizes."""

from __future__ import annotations

import resource
import statistics
import threading
import time
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
        self._ready = threading.Barrier(clients + 1)
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        self.done = 0
        self.last_done = 0.0  # perf_counter of the latest response
        self.errors: list[str] = []

    def start(self) -> float:
        """Open every client, then release them together; returns the start time."""
        for thread in self._threads:
            thread.start()
        self._ready.wait()
        return time.perf_counter()

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        for thread in self._threads:
            thread.join()
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} requests failed; first: {self.errors[0]}")

    def run(self) -> float:
        """start() + join(); the seconds from the start to the last response."""
        started = self.start()
        self.join()
        return self.last_done - started

    def _take(self) -> bool:
        with self._lock:
            if self._stop.is_set() or self._left == 0:
                return False
            if self._left is not None:
                self._left -= 1
            return True

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=600) as client:
            self._ready.wait()
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
    images_before, calls_before = server.batch_stats()
    load = Load(server.url, clients, seeds, images, workload)
    started = load.start()  # after its clients are made (loading CA certificates costs ~30 ms of CPU each)
    cpu_before = process_cpu_s(server.process.pid) + process_cpu_s()
    load.join()
    seconds = load.last_done - started
    cpu_s = process_cpu_s(server.process.pid) + process_cpu_s() - cpu_before
    images_after, calls_after = server.batch_stats()
    mean_batch = (images_after - images_before) / max(calls_after - calls_before, 1)
    return Throughput(config, clients, images, seconds, mean_batch, cpu_s)


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


@dataclass
class Paired:
    """The service's images/s at `clients` clients, each run bracketed by the bare pipeline's batch of the same
    size: this machine's speed drifts by tens of percent within minutes, so a bare rate taken in another phase of
    the run (minutes away) moves the ratio more than anything the service does."""

    clients: int
    service_ips: list[float]  # one per round
    bare_ips: list[float]  # len(service_ips) + 1: before the first round, between rounds, after the last
    mean_batch: float  # images per pipeline call, the rounds' mean
    # CPU per image and cores kept busy in the same runs (see Throughput.cpu_s). With both sides CPU-bound on the
    # same cores, bare ÷ service CPU per image is the most the ratio can be.
    service_cpu_ms: list[float]
    bare_cpu_ms: list[float]
    service_cores: list[float]
    bare_cores: list[float]

    @property
    def ratios(self) -> list[float]:
        """Each round against the mean of the bare rates just before and just after it."""
        return [s / ((self.bare_ips[i] + self.bare_ips[i + 1]) / 2) for i, s in enumerate(self.service_ips)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def cpu_ceilings(self) -> list[float]:
        """Per round, paired as `ratios` are: the mean bare CPU per image around it ÷ the service's in it."""
        bare = self.bare_cpu_ms
        return [(bare[i] + bare[i + 1]) / 2 / s for i, s in enumerate(self.service_cpu_ms)]

    @property
    def cpu_ceiling(self) -> float:
        return statistics.median(self.cpu_ceilings)


def measure_paired(
    server: BenchServer,
    bare: BarePipeline,
    clients: int,
    images: int,
    rounds: int,
    seeds: Seeds,
    workload: Workload = CPU,
) -> Paired:
    """bare, service, bare, service, ..., bare: `rounds` service runs of `images` requests from `clients` clients,
    each between two bare runs at batch `clients` (the server sits idle while the bare pipeline runs in this
    process). One untimed round of each first."""
    bare(seeds.take(clients))
    Load(server.url, clients, seeds, clients, workload).run()
    bares = [measure_bare(bare, clients, images, 0, seeds)]
    runs = []
    for _ in range(rounds):
        runs.append(measure_server(server, "service", clients, images, 0, seeds, workload))
        bares.append(measure_bare(bare, clients, images, 0, seeds))
    return Paired(
        clients,
        [run.images_per_s for run in runs],
        [b.images_per_s for b in bares],
        statistics.mean(run.mean_batch for run in runs),
        [run.cpu_ms_per_image for run in runs],
        [b.cpu_ms_per_image for b in bares],
        [run.cores for run in runs],
        [b.cores for b in bares],
    )
