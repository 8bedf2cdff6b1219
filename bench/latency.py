"""One request against the bare call; /health and /download latency and the owner's idle share under load."""

from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass, field

import httpx

from bench.server import BenchServer
from bench.throughput import Load
from bench.workload import BarePipeline, Seeds, request_body

STAGES = ("queue_ms", "inference_ms", "encode_ms", "store_ms")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class SingleRequest:
    samples: int
    e2e_ms: float  # median: POST /generate sent -> JSON response read
    bare_ms: float  # median: the bare pipeline call for the same prompt and seed
    stages_ms: dict[str, float]  # medians of the service's own timings in the response

    @property
    def ratio(self) -> float:
        return self.e2e_ms / self.bare_ms


def single_request(
    server: BenchServer, bare: BarePipeline, samples: int, seeds: Seeds, untimed: int = 2
) -> SingleRequest:
    """One client, one request at a time; each request is followed by the bare call for the same seed (and the
    bare pipeline's workload), so any drift of the machine hits both alike. `untimed` rounds first."""
    e2e, plain = [], []
    stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    with server.client() as client:
        for i in range(samples + untimed):
            seed = seeds.next()
            started = time.perf_counter()
            response = client.post("/generate", json=request_body(seed, bare.workload)).raise_for_status()
            middle = time.perf_counter()
            bare([seed])
            ended = time.perf_counter()
            if i >= untimed:
                e2e.append((middle - started) * 1000)
                plain.append((ended - middle) * 1000)
                timings = response.json()["timings"]
                for stage in STAGES:
                    stages[stage].append(float(timings.get(stage, 0.0)))
    return SingleRequest(
        samples,
        statistics.median(e2e),
        statistics.median(plain),
        {stage: statistics.median(v) for stage, v in stages.items()},
    )


@dataclass
class Probe:
    path: str
    samples_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.samples_ms, 99)


@dataclass
class Saturation:
    clients: int
    window_s: float
    images: int  # generated during the window
    mean_batch: float  # images per pipeline call during the window
    busy_share: float  # GPU owner in a pipeline call / window, read at the window's edges (exact)
    scheduler_busy_share: float  # the same from scheduler._busy_s deltas: off by up to one batch at each edge
    health: Probe
    download: Probe

    @property
    def idle_share(self) -> float:
        return 1.0 - self.busy_share


def _probe(server: BenchServer, probe: Probe, interval_s: float, stop: threading.Event) -> None:
    with server.client(timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                client.get(probe.path).raise_for_status()
            except httpx.HTTPError as exc:  # counted and reported: a failing probe is a finding, not a crash
                probe.errors.append(f"{type(exc).__name__}: {exc}")
            else:
                probe.samples_ms.append((time.perf_counter() - started) * 1000)
            stop.wait(interval_s)


def saturated(
    server: BenchServer, clients: int, seconds: float, seeds: Seeds, probe_interval_s: float = 0.02
) -> Saturation:
    """`clients` clients generate back to back; once each has had an answer, a window of `seconds` opens, in which
    /health and /download/{id} are probed (one client each, `probe_interval_s` apart) and the owner is read."""
    with server.client() as client:
        image_id = client.post("/generate", json=request_body(seeds.next())).raise_for_status().json()["id"]
    load = Load(server.url, clients, seeds, images=None)
    health, download = Probe("/health"), Probe(f"/download/{image_id}")
    stop_probes = threading.Event()
    probes = [
        threading.Thread(target=_probe, args=(server, p, probe_interval_s, stop_probes), daemon=True)
        for p in (health, download)
    ]
    load.start()
    try:
        deadline = time.monotonic() + 600
        while load.done < clients and not load.errors and time.monotonic() < deadline:
            time.sleep(0.05)  # steady state: as many answers as clients, each asked again at once
        batches_before, before, done_before = server.batch_stats(), server.owner(), load.done
        for thread in probes:
            thread.start()
        time.sleep(seconds)
        after, done_after, batches_after = server.owner(), load.done, server.batch_stats()
    finally:
        stop_probes.set()
        load.stop()
    for thread in probes:
        if thread.ident is not None:
            thread.join()
    load.join()
    window = after.now - before.now
    return Saturation(
        clients=clients,
        window_s=window,
        images=done_after - done_before,
        mean_batch=(batches_after[0] - batches_before[0]) / max(batches_after[1] - batches_before[1], 1),
        busy_share=(after.busy_s - before.busy_s) / window,
        scheduler_busy_share=(after.scheduler_busy_s - before.scheduler_busy_s) / window,
        health=health,
        download=download,
    )
