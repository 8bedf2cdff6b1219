"""`python -m bench.encoding`: what the watermark + PNG encoding costs a kernel launcher, threads vs processes
(issue 16).

The GPU owner's thread launches kernels in a tight Python loop; anything else that holds this process's GIL slows
it. The stand-in for it here: a loop of small torch calls in the main thread (each a few microseconds, like a
launch). Its rate is measured alone, then while 1024² images are watermarked and PNG-encoded continuously by
1 and 4 threads of this process (as before issue 16), and by the service's Encoder with 1 and `default_processes()`
worker processes. Printed: each rate as a share of the rate alone, and the images encoded per second meanwhile.
Side by side in one run; bounded (a few seconds per configuration).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from app.engine.images.encoder import Encoder, default_processes, encode
from app.engine.images.metadata import Provenance
from bench.workload import smooth_picture

SIDE = 1024


def _provenance() -> Provenance:
    return Provenance(
        kind="generate",
        model="sdxl-base",
        prompt="a lighthouse at dusk",
        negative_prompt=None,
        prompt_2=None,
        negative_prompt_2=None,
        seed=1,
        steps=30,
        guidance_scale=5.0,
        width=SIDE,
        height=SIDE,
        scheduler="EulerDiscreteScheduler",
        watermark=True,
    )


def launch_rate(seconds: float) -> float:
    """Small torch calls per second on this thread."""
    a, b = torch.ones(64), torch.ones(64)
    calls, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(100):
            a = torch.add(a, b)
        calls += 100
    return calls / seconds


def with_threads(threads: int, seconds: float) -> tuple[float, float]:
    image, provenance, stop, done = smooth_picture(SIDE), _provenance(), threading.Event(), [0]

    def work() -> None:
        while not stop.is_set():
            encode(image, provenance)
            done[0] += 1

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    time.sleep(0.5)  # all of them encoding
    start = done[0]
    rate = launch_rate(seconds)
    images = (done[0] - start) / seconds
    stop.set()
    for w in workers:
        w.join()
    return rate, images


def with_processes(processes: int, seconds: float) -> tuple[float, float]:
    """The Encoder's pool fed from an event loop in another thread, as the service's loop feeds it."""
    image, provenance, stop, done = smooth_picture(SIDE), _provenance(), threading.Event(), [0]
    encoder = Encoder(processes)

    async def feed() -> None:
        async def one() -> None:
            while not stop.is_set():
                await encoder.encode(image, provenance)
                done[0] += 1

        await asyncio.gather(*(one() for _ in range(processes)))
        await encoder.close()

    feeder = threading.Thread(target=lambda: asyncio.run(feed()))
    feeder.start()
    deadline = time.monotonic() + 60
    while done[0] < processes and time.monotonic() < deadline:  # the pool is up and every worker has encoded once
        time.sleep(0.1)
    start = done[0]
    rate = launch_rate(seconds)
    images = (done[0] - start) / seconds
    stop.set()
    feeder.join()
    return rate, images


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.encoding")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per configuration")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    encode(smooth_picture(SIDE), _provenance())
    one_image_ms = (time.perf_counter() - started) * 1000
    alone = launch_rate(args.seconds)
    rows: list[dict[str, Any]] = [{"config": "alone", "launch_share": 1.0, "images_per_s": 0.0}]
    configs: list[tuple[str, Callable[[], tuple[float, float]]]] = [
        ("1 thread", partial(with_threads, 1, args.seconds)),
        ("4 threads", partial(with_threads, 4, args.seconds)),
    ]
    configs += [
        (f"{n} process{'es' if n > 1 else ''}", partial(with_processes, n, args.seconds))
        for n in sorted({1, default_processes()})
    ]
    for name, run in configs:
        rate, images = run()
        rows.append({"config": name, "launch_share": round(rate / alone, 3), "images_per_s": round(images, 2)})
    print(json.dumps({"side": SIDE, "encode_ms_one_image": round(one_image_ms), "launches_per_s_alone": round(alone)}))
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
