"""`python -m bench.followers [--streams 300] [--seconds 10]`: store reads per second while N SSE streams follow
one job of another replica.

A real server (uvicorn in this process, the tiny model, a local store) is given a record of a queued job that a
replica elsewhere runs, and that replica's lease, renewed every second by this script: the job stays queued and
alive, so every stream keeps following it. The server's store is wrapped in a counter of `get_record` calls (the
only instrumentation); after every stream has its first event, reads are counted for `--seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import uvicorn

HOST = "127.0.0.1"


class CountingStore:
    """The real store, with every record read counted by kind ("jobs", "replicas")."""

    def __init__(self, store: Any):
        self._store = store
        self.reads: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get_record(self, name: str) -> bytes | None:
        self.reads[name.split("/", 1)[0]] += 1
        result: bytes | None = await self._store.get_record(name)
        return result


def _remote_job(job_id: str, instance: str) -> dict[str, Any]:
    now = time.time()
    return {
        "id": job_id,
        "kind": "generate",
        "status": "queued",
        "model": "tiny",
        "queue_position": None,
        "progress": {"step": 0, "total": 8},
        "created": now,
        "started": None,
        "finished": None,
        "timings": {},
        "images": [],
        "parent_id": None,
        "error": None,
        "replica": {"id": "elsewhere", "instance": instance},
    }


def _lease(instance: str, started: float) -> bytes:
    lease = {"replica": "elsewhere", "instance": instance, "started": started, "heartbeat": time.time()}
    return json.dumps({**lease, "lease_s": 30.0, "stopped": None}).encode()


async def _follow(client: httpx.AsyncClient, job_id: str, first: asyncio.Event, ready: list[int], n: int) -> None:
    async with client.stream("GET", f"/jobs/{job_id}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                ready.append(1)
                if len(ready) == n:
                    first.set()


async def _measure(url: str, counting: CountingStore, job_id: str, streams: int, seconds: float) -> dict[str, Any]:
    first, ready = asyncio.Event(), list[Any]()
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as client:
        tasks = [asyncio.create_task(_follow(client, job_id, first, ready, streams)) for _ in range(streams)]
        await asyncio.wait_for(first.wait(), 120)
        counting.reads.clear()
        start = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed, reads = time.monotonic() - start, dict(counting.reads)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    total = sum(reads.values())
    return {"streams": streams, "seconds": round(elapsed, 2), "reads": reads, "reads_per_s": round(total / elapsed, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.followers", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)

    import app.main
    from app.config import Settings
    from app.server.config import server_config
    from app.storage.local import LocalImageStore

    counting: list[CountingStore] = []
    real_build = app.main.build_store  # type: ignore[attr-defined]  # app.main's own import of it

    def build_counting(settings: Settings) -> Any:
        counting.append(CountingStore(real_build(settings)))
        return counting[-1]

    app.main.build_store = build_counting  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as tmp:
        image_dir = Path(tmp) / "images"
        settings = Settings(model="tiny", image_dir=image_dir, watermark=False, warmup=False)
        job_id, instance, started = uuid.uuid4().hex, uuid.uuid4().hex, time.time()
        elsewhere = LocalImageStore(image_dir)  # the other replica, writing into the same directory

        async def renew_forever() -> None:
            while True:
                await elsewhere.put_record(f"replicas/{instance}.json", _lease(instance, started))
                await asyncio.sleep(1.0)

        async def run() -> dict[str, Any]:
            await elsewhere.open()
            await elsewhere.put_record(f"jobs/{job_id}.json", json.dumps(_remote_job(job_id, instance)).encode())
            renewing = asyncio.create_task(renew_forever())
            config = server_config(app.main.create_app(settings), settings, host=HOST, port=0, log_level="warning")
            server = uvicorn.Server(config)
            thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
            thread.start()
            while not server.started:
                await asyncio.sleep(0.05)
            port = server.servers[0].sockets[0].getsockname()[1]
            url = f"http://{HOST}:{port}"
            async with httpx.AsyncClient(base_url=url) as probe:
                while (await probe.get("/ready")).status_code != 200:
                    await asyncio.sleep(0.1)
            try:
                return await _measure(url, counting[0], job_id, args.streams, args.seconds)
            finally:
                renewing.cancel()
                server.should_exit = True
                await asyncio.to_thread(thread.join, 30)

        print(json.dumps(asyncio.run(run())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
