"""`python -m bench.bookkeeping [--jobs N]`: what each piece of per-image bookkeeping costs, beside the image itself.

Issue 16 asks what the hot path spends per image besides the pipeline, so that what a user would not miss can go.
Each piece runs here alone, with the service's own objects, on a local store in a temporary folder (this disk):
  job records   `JobRecords.save` twice per job (accepted, ended): write, fsync, rename, fsync of the folder;
  progress      one `call_soon_threadsafe` hop per denoising step from a worker thread, then `Completion.step`
                (counters and `Job.touch`, which wakes SSE streams and the synchronous waiter);
  events        the two `emit` calls per image with the default sink (no webhooks configured: webhooks are a
                user's choice, and their cost is the delivery the user asked for);
  metrics       the Prometheus observations per batch and per image;
  image write   `LocalImageStore.put` of a 256² PNG: the product itself, for scale (not removable).
For each: wall time per image, and the CPU time the process spent (`time.process_time`, all threads): CPU time
spent beside a GPU owner competes with its kernel launches for the GIL and the cores. Printed side by side with
the tiny pipeline's own time per image at batch 8 (256², 4 steps), measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

STEPS = 4  # denoising steps per image, as in `make bench`
BATCH = 8


def _timed(n: int, fn: Callable[[], None]) -> tuple[float, float]:
    """(wall ms, CPU ms) per call, over n calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return (time.perf_counter() - wall) * 1000 / n, (time.process_time() - cpu) * 1000 / n


async def _timed_async(n: int, fn: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - wall) * 1000 / n, (time.process_time() - cpu) * 1000 / n


def _job() -> Any:
    from app.engine.jobs.job import Job

    return Job(kind="generate", model="tiny", items=[None] * BATCH, batch_key=None, pixels=256 * 256, steps=STEPS)


def _png() -> bytes:
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # like a real image: no runs
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    return buffer.getvalue()


async def _records(root: Path, jobs: int) -> tuple[float, float]:
    from app.engine.jobs.records import JobRecords
    from app.storage.local import LocalImageStore

    store = LocalImageStore(root / "records")
    await store.open()
    records = JobRecords(store, "bench")

    async def accepted_and_ended() -> None:
        job = _job()
        await records.save(job)
        await records.save(job)

    wall, cpu = await _timed_async(jobs, accepted_and_ended)
    await store.close()
    return wall / BATCH, cpu / BATCH  # a job of BATCH images: per image


async def _progress(steps: int) -> tuple[float, float]:
    """A worker thread reports `steps` steps of a batch of BATCH images, the loop applies each."""
    job = _job()
    loop = asyncio.get_running_loop()
    applied = asyncio.Event()
    left = [steps]

    def apply() -> None:  # what Completion.step does for a batch
        for _ in job.items:
            job.steps_done += 1
        job.touch()
        left[0] -= 1
        if not left[0]:
            applied.set()

    def owner() -> None:
        for _ in range(steps):
            loop.call_soon_threadsafe(apply)

    wall, cpu = time.perf_counter(), time.process_time()
    threading.Thread(target=owner).start()
    await applied.wait()
    per_step = ((time.perf_counter() - wall) * 1000 / steps, (time.process_time() - cpu) * 1000 / steps)
    return per_step[0] * STEPS / BATCH, per_step[1] * STEPS / BATCH  # per image: STEPS steps shared by BATCH


def _events(n: int) -> tuple[float, float]:
    from app.config import Settings
    from app.events.factory import build_events

    sink = build_events(Settings(model="tiny"))
    data = {"job_id": "j", "kind": "generate", "model": "tiny", "seed": 1, "width": 256, "height": 256}
    png = _png()

    def two() -> None:
        sink.emit("image.generated", data)
        sink.emit("image.stored", {**data, "image_id": "i", "url": "/download/i"}, image=png)

    return _timed(n, two)


def _metrics(n: int) -> tuple[float, float]:
    from app.engine.metrics import Metrics

    m = Metrics()

    def per_image() -> None:  # a batch's observations shared by its images, plus the image's own
        m.images.labels("generate").inc()
        m.queue_wait.observe(0.01)
        m.batch_size.observe(BATCH)
        m.inference.labels("generate").observe(1.0)
        m.queue_depth.set(3)

    return _timed(n, per_image)


async def _image_write(root: Path, n: int) -> tuple[float, float]:
    from app.storage.ids import new_id
    from app.storage.local import LocalImageStore

    store = LocalImageStore(root / "images")
    await store.open()
    png = _png()

    async def put() -> None:
        await store.put(new_id(), png, {})

    result = await _timed_async(n, put)
    await store.close()
    return result


def _pipeline_ms_per_image() -> float:
    from app.config import Settings
    from app.engine.models.tiny.build import ensure_tiny_models
    from bench.throughput import measure_bare
    from bench.workload import BarePipeline, Seeds

    bare = BarePipeline(ensure_tiny_models(Settings(model="tiny").cache_dir).base)
    rate = measure_bare(bare, BATCH, images=3 * BATCH, warmup=1, seeds=Seeds())  # 1 untimed call, 3 timed
    return 1000 / rate.images_per_s


async def _measure(jobs: int) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory(prefix="sdxl-bookkeeping-") as tmp:
        root = Path(tmp)
        return {
            "job records (2 writes per job)": await _records(root, jobs),
            "progress (a hop per step)": await _progress(jobs * STEPS),
            "events (no webhooks)": _events(jobs * 10),
            "metrics": _metrics(jobs * 10),
            "image write (256² PNG, fsync)": await _image_write(root, jobs),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bookkeeping", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs (of 8 images) per measurement")
    args = parser.parse_args(argv)
    pipeline = _pipeline_ms_per_image()
    rows = asyncio.run(_measure(args.jobs))
    print(f"tiny pipeline, batch {BATCH}, 256², {STEPS} steps: {pipeline:.1f} ms per image\n")
    print(f"{'per image':34} {'wall ms':>9} {'CPU ms':>8} {'CPU ÷ pipeline':>15}")
    for name, (wall, cpu) in rows.items():
        print(f"{name:34} {wall:9.3f} {cpu:8.3f} {cpu / pipeline:15.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
