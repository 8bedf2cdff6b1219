"""`python -m bench.bodies`: what concurrent maximal request bodies cost the service (issue 13, item 5).

A real service (tiny model, 127.0.0.1, its own process) gets N bodies at once, of two kinds:
  - values: a body of 16 MiB minus a little of `[],[],...` to /generate (5.6 M JSON values; parsed, ~430 MB and
    seconds of the event loop each);
  - images: /img2img with the largest PNG that fits the upload limit (random pixels, which PNG cannot shrink),
    each an accepted job, at a 256x256 output so that what is measured is the body, not the pipeline's
    activations.
While they run, /health is probed every 20 ms (from its own process: the senders' threads would otherwise delay
the probe in this one) and the server's RSS sampled every 10 ms. Printed per kind: the
statuses, /health p50/p99/max, and the peak RSS over the idle server's. Bounded: N requests per kind, one run.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import io
import json
import multiprocessing
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from PIL import Image

from bench.server import BenchServer, running

MIB = 1024 * 1024
UPLOAD = 16 * MIB


def values_body() -> bytes:
    head, tail = b'{"prompt": "x", "loras": [', b"[]]}"
    return head + b"[]," * ((UPLOAD - len(head) - len(tail) - 16) // 3) + tail


def image_body() -> bytes:
    """The largest random square PNG whose base64 body stays under the upload limit."""
    side = int((UPLOAD * 3 / 4 / 3) ** 0.5) // 8 * 8
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    while True:
        png = io.BytesIO()
        Image.fromarray(pixels[:side, :side]).save(png, format="PNG", compress_level=1)
        body = json.dumps(
            {
                "prompt": "x",
                "image": base64.b64encode(png.getvalue()).decode(),
                "strength": 0.25,
                "seed": 1,
                "num_inference_steps": 4,
                "width": 256,
                "height": 256,
            }
        )
        if len(body) < UPLOAD - 1024:
            return body.encode()
        side -= 64


def _probe(url: str, stop: Any, out: Any) -> None:
    with httpx.Client(timeout=30) as c:
        while not stop.is_set():
            started = time.perf_counter()
            c.get(f"{url}/health")
            out.put(time.perf_counter() - started)
            time.sleep(0.02)


def _sample_rss(pid: int, stop: threading.Event, out: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        out.append(process.memory_info().rss)
        time.sleep(0.01)


def attack(server: BenchServer, route: str, body: bytes, n: int) -> dict[str, Any]:
    idle_rss = psutil.Process(server.process.pid).memory_info().rss
    stop, rss = threading.Event(), list[int]()
    probe_stop = multiprocessing.Event()
    health_q: multiprocessing.Queue[float] = multiprocessing.Queue()
    probe = multiprocessing.Process(target=_probe, args=(server.url, probe_stop, health_q))
    watcher = threading.Thread(target=_sample_rss, args=(server.process.pid, stop, rss))
    statuses: collections.Counter[str] = collections.Counter()

    def send() -> None:
        with httpx.Client(timeout=600) as c:
            r = c.post(f"{server.url}{route}", content=body, headers={"Content-Type": "application/json"})
            kind = r.json()["error"]["type"] if r.status_code >= 400 else "ok"
            statuses[f"{r.status_code} {kind}"] += 1

    senders = [threading.Thread(target=send) for _ in range(n)]
    probe.start()
    watcher.start()
    time.sleep(0.5)
    started = time.perf_counter()
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    seconds = time.perf_counter() - started
    stop.set()
    probe_stop.set()
    watcher.join()
    health = []
    while probe.is_alive() or not health_q.empty():
        with contextlib.suppress(queue.Empty):
            health.append(health_q.get(timeout=0.5))
    probe.join()
    ms = sorted(h * 1000 for h in health)
    return {
        "route": route,
        "bodies": n,
        "body_mib": round(len(body) / MIB, 1),
        "seconds": round(seconds, 1),
        "statuses": dict(statuses),
        "health_p50_ms": round(statistics.median(ms), 1),
        "health_p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 1),
        "health_max_ms": round(ms[-1], 1),
        "peak_rss_over_idle_mib": round((max(rss) - idle_rss) / MIB),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bodies")
    parser.add_argument("-n", type=int, default=12, help="concurrent bodies per kind (default 12)")
    args = parser.parse_args()
    kinds: dict[str, tuple[str, Callable[[], bytes]]] = {
        "values": ("/generate", values_body),
        "images": ("/img2img", image_body),
    }
    from app.engine.models.tiny.build import ensure_tiny_models

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "models"
        ensure_tiny_models(cache)
        with running("bodies", root, model="tiny", cache_dir=cache, image_dir=root / "images") as server:
            for name, (route, make) in kinds.items():
                result = attack(server, route, make(), args.n)
                print(name, json.dumps(result))


if __name__ == "__main__":
    main()
