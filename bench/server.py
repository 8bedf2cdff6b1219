"""The service under test: `create_app(Settings(model="tiny", ...))` behind uvicorn, in a child process.

Why a child process and not a thread of the benchmark (as tests/conftest.py does): the service's event loop, its
GPU-owner thread and its encode threads should share one GIL only with each other, as in production, not with
the benchmark's HTTP clients and probes; otherwise /health latency and the owner's idle share would measure the
benchmark. The child is `python -m bench.server` rather than `python -m app serve` only so that it can serve
one extra, benchmark-only route, GET /_bench/owner, that reads the GPU owner's busy time in the same process.
The app itself is built by the same `create_app` and run by uvicorn with the CLI's settings; the route and
the clock wrapped around the owner's runner exist in this child only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 180.0
# Settings the environment must not change under the benchmark: the child gets the values we pass, nothing else.
_SCRUBBED_ENV = ("SDXL_", "GENERATION_AUTH_KEY", "IMAGE_DIR")


@dataclass
class OwnerSample:
    """One reading of the GPU owner, taken inside the server process (its perf_counter clock)."""

    now: float
    busy_s: float  # pipeline time so far, including the batch running now
    scheduler_busy_s: float  # scheduler._busy_s: grows only when a call ends (cross-check)


@dataclass
class BenchServer:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    torch_threads: int = 0

    def client(self, timeout: float = 600.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def owner(self) -> OwnerSample:
        body = httpx.get(f"{self.url}/_bench/owner", timeout=30).raise_for_status().json()
        return OwnerSample(body["now"], body["busy_s"], body["scheduler_busy_s"])

    def batch_stats(self) -> tuple[float, float]:
        """(images, pipeline calls) so far, from the service's own Prometheus histogram sdxl_batch_size."""
        text = httpx.get(f"{self.url}/metrics", timeout=30).raise_for_status().text
        values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("sdxl_batch_size_"))
        return float(values.get("sdxl_batch_size_sum", 0)), float(values.get("sdxl_batch_size_count", 0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running(
    name: str, log_dir: Path, startup_timeout_s: float = STARTUP_TIMEOUT_S, **settings: Any
) -> Iterator[BenchServer]:
    """Start the service with these Settings values (model, cache_dir, image_dir, ...), ready; stop it after."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_ENV)}
    log_path = log_dir / f"server-{name}.log"
    values = json.dumps({**settings, "host": HOST, "port": port}, default=str)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.server", values, "--parent", str(os.getpid())],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=Path(__file__).resolve().parent.parent,  # the repository root, where `bench` imports from
        )
    server = BenchServer(name, f"http://{HOST}:{port}", process, log_path)
    try:
        wait_ready(server, startup_timeout_s)
        # The first read also installs the owner clock, before any measured work.
        server.torch_threads = int(httpx.get(f"{server.url}/_bench/owner", timeout=30).json()["torch_threads"])
        yield server
    finally:
        stop(process)


def wait_ready(server: BenchServer, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            if httpx.get(f"{server.url}/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    tail = server.log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"server {server.name!r} did not become ready; end of {server.log_path}:\n{tail}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()  # SIGTERM: the service's own graceful shutdown
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the child process ------------------------------------------------------------------------------------


class OwnerClock:
    """Time the GPU owner spends in pipeline calls, readable at any instant.

    scheduler._busy_s only grows when a call ends, so a window read off it is wrong by up to one batch (seconds
    on CPU). Wrapping the owner's runner gives the running batch's elapsed time too. The state is one tuple,
    replaced whole, so a reader on the event loop always sees a consistent pair.
    """

    def __init__(self, scheduler: Any) -> None:
        self._state: tuple[float, float | None] = (0.0, None)  # (finished calls' seconds, running call's start)
        runner: Callable[..., Any] = scheduler._runner

        def timed(*args: Any) -> Any:
            done, started = self._state[0], time.perf_counter()
            self._state = (done, started)
            try:
                return runner(*args)
            finally:
                self._state = (done + time.perf_counter() - started, None)

        scheduler._runner = timed

    def busy_s(self, now: float) -> float:
        done, since = self._state
        return done + (now - since if since is not None else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.server")
    parser.add_argument("settings", help="Settings values as a JSON object")
    parser.add_argument("--parent", type=int, help="the benchmark's pid: shut down when it is gone")
    args = parser.parse_args()
    if args.parent is not None:  # first, before the seconds of imports and the model load
        # A benchmark killed outright (kill -9, an OOM kill) cannot stop this server; it would serve on under init,
        # with its encode workers, holding cores and memory. So it goes when the benchmark does, as `stop()` asks.
        threading.Thread(target=_stop_with, args=(args.parent,), name="stop-with-bench", daemon=True).start()

    import torch
    import uvicorn

    from app.config import Settings, is_loopback
    from app.main import create_app
    from app.server.config import server_config

    settings = Settings(**json.loads(args.settings))
    if not is_loopback(settings.host):
        raise SystemExit("the benchmark server binds loopback only")
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    app = create_app(settings)
    clocks: dict[int, OwnerClock] = {}

    @app.get("/_bench/owner", include_in_schema=False)
    async def owner() -> dict[str, Any]:
        scheduler = app.state.service.scheduler
        clock = clocks.setdefault(id(scheduler), OwnerClock(scheduler))
        now = time.perf_counter()
        return {
            "now": now,
            "busy_s": clock.busy_s(now),
            "scheduler_busy_s": scheduler._busy_s,
            "torch_threads": torch.get_num_threads(),
        }

    uvicorn.Server(server_config(app, settings, timeout_graceful_shutdown=30)).run()


def _stop_with(parent: int) -> None:
    """This process is the benchmark's child, so the benchmark is gone once this process's parent is another (the
    orphan's new parent): no pid can be mistaken for it, however pids are reused."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)  # the service's own graceful shutdown, as stop() sends it


if __name__ == "__main__":
    main()
