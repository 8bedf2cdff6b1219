"""The encoder: the watermark and PNG run in worker processes and give the same bytes as in this process; a worker
that dies is replaced and the image encoded again; closing leaves no worker behind, and nor does the service's death."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from app.engine.images.encoder import Encoder, default_processes, encode
from tests.helpers import provenance

PROVENANCE = provenance(prompt="a lighthouse", width=512, height=512, watermark=True)


def _image() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def _workers(encoder: Encoder) -> list[int]:
    pool = encoder._pool  # the executor's own bookkeeping: which worker processes it runs (test-only)
    return [] if pool is None else list(pool._processes)


def test_default_is_half_the_cores_two_to_four() -> None:
    assert 2 <= default_processes() <= 4
    assert default_processes() == max(2, min(4, len(os.sched_getaffinity(0)) // 2))


@pytest.mark.parametrize("watermark", [True, False])
def test_a_worker_process_encodes_what_this_process_would(watermark: bool) -> None:
    chosen = replace(PROVENANCE, watermark=watermark)
    encoder = Encoder(1)

    async def run() -> tuple[bytes, list[int]]:
        try:
            png = await encoder.encode(_image(), chosen)
            return png, _workers(encoder)
        finally:
            await encoder.close()

    png, workers = asyncio.run(run())
    assert png == encode(_image(), chosen)  # watermark and PNG are deterministic: byte for byte
    assert workers and os.getpid() not in workers
    assert encoder._pool is None


def test_threads_when_processes_is_zero() -> None:
    encoder = Encoder(0)
    png = asyncio.run(encoder.encode(_image(), PROVENANCE))
    assert png == encode(_image(), PROVENANCE) and encoder._pool is None


def test_a_dead_worker_is_replaced_and_the_image_encoded_again(caplog: pytest.LogCaptureFixture) -> None:
    encoder = Encoder(1)

    async def run() -> tuple[bytes, list[int], list[int]]:
        try:
            await encoder.encode(_image(), PROVENANCE)
            first = _workers(encoder)
            for pid in first:  # fault injection: the worker is killed (as the OOM killer would)
                os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.2)
            png = await encoder.encode(_image(), PROVENANCE)
            return png, first, _workers(encoder)
        finally:
            await encoder.close()

    png, first, second = asyncio.run(run())
    assert png == encode(_image(), PROVENANCE)
    assert second and not set(first) & set(second)
    assert "an encoding worker process died" in caplog.text


def test_workers_that_cannot_start_fall_back_to_threads(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def dying(self: Encoder) -> ProcessPoolExecutor:  # fault injection: every worker dies as it starts
        context = multiprocessing.get_context("forkserver")
        self._pool = ProcessPoolExecutor(1, mp_context=context, initializer=os._exit, initargs=(1,))
        return self._pool

    monkeypatch.setattr(Encoder, "_start", dying)
    encoder = Encoder(1)
    png = asyncio.run(encoder.encode(_image(), PROVENANCE))
    assert png == encode(_image(), PROVENANCE)  # the image is not lost
    assert encoder.processes == 0 and "encoding in threads of this process from now on" in caplog.text


def test_warm_starts_the_workers_before_any_image() -> None:
    encoder = Encoder(1)

    async def run() -> list[int]:
        try:
            await encoder.warm()
            return _workers(encoder)
        finally:
            await encoder.close()

    assert asyncio.run(run())


@pytest.mark.parametrize("pidfds", [True, False], ids=["pidfd", "polling"])
def test_a_worker_ends_when_the_service_process_ends(pidfds: bool) -> None:
    """_wait_then_exit as a worker runs it, in a process of its own, watching a stand-in for the service."""
    service = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    without = "" if pidfds else "del os.pidfd_open\n"  # as on macOS, or Linux before 5.3
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import os\n{without}from app.engine.images.encoder import _wait_then_exit\n"
            f"_wait_then_exit({service.pid})\nraise SystemExit(3)",  # never reached: it exits 0 itself
        ]
    )
    try:
        time.sleep(0.2)
        assert watcher.poll() is None  # the service still runs: so does the worker
        service.wait(5)  # reaped, as the real service's parent would reap it
        assert watcher.wait(5) == 0
    finally:
        for proc in (service, watcher):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
