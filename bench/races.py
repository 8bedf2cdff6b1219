"""`python -m bench.races`: every accepted job ends, whatever the timing (issue 13, items 2, 6 and 7).

A real service (tiny model, 127.0.0.1, its own process, max_batch 2 so multi-image jobs span several calls):
  1. cancel races: async jobs of 1-4 images, each cancelled after a random delay (0-6 s: queued, between its
     batches, mid-call, or already done); then every accepted job is read until it is terminal;
  2. disconnects: synchronous requests whose clients hang up after a random delay; afterwards no image is on
     disk that nobody was given the id of (an orphan), and the queue drains;
  3. metrics labels: the number of series in /metrics before and after 300 requests with made-up methods and
     paths.
Bounded: a fixed number of requests per part, one run. Prints one JSON line per part.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.server import BenchServer, running

ASYNC = {"Prefer": "respond-async"}
TERMINAL = {"succeeded", "failed", "cancelled"}
BODY = {"prompt": "race", "num_inference_steps": 4, "width": 256, "height": 256}


def cancel_races(server: BenchServer, jobs: int, rng: random.Random) -> dict[str, Any]:
    accepted: list[str] = []
    stored: set[str] = set()
    with server.client(timeout=60) as c:

        def one(i: int) -> None:
            r = c.post("/generate", json={**BODY, "seed": i, "num_images": rng.randint(1, 4)}, headers=ASYNC)
            if r.status_code != 202:
                return
            job_id = r.json()["id"]
            accepted.append(job_id)
            time.sleep(rng.uniform(0, 6))
            c.delete(f"/jobs/{job_id}")

        threads = [threading.Thread(target=one, args=(i,)) for i in range(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cancelled_at = time.perf_counter()
        ended: Counter[str] = Counter()
        last_end = 0.0
        for job_id in accepted:
            deadline = time.monotonic() + 120
            while (view := c.get(f"/jobs/{job_id}").json())["status"] not in TERMINAL:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            ended[view["status"]] += 1
            stored.update(image["id"] for image in view["images"])
            last_end = max(last_end, time.perf_counter() - cancelled_at)
    return {
        "accepted": len(accepted),
        "ended": sum(n for status, n in ended.items() if status in TERMINAL),
        "by_status": dict(ended),
        "all_ended_within_s": round(last_end, 2),
        "images_listed": len(stored),
    }


def disconnects(server: BenchServer, image_dir: Path, requests: int, rng: random.Random) -> dict[str, Any]:
    before = {p.stem for p in image_dir.glob("*.png")}
    answered: set[str] = set()
    hung_up = 0

    def one(i: int) -> None:
        nonlocal hung_up
        body = {**BODY, "seed": 10_000 + i, "num_images": rng.randint(1, 3)}
        try:
            with httpx.Client(base_url=server.url, timeout=rng.uniform(0.5, 6.0)) as c:
                r = c.post("/generate", json=body)
            if r.status_code == 200:
                answered.update(image["id"] for image in r.json()["images"])
        except httpx.TimeoutException:
            hung_up += 1  # the client closes its connection: the service should cancel the job

    threads = [threading.Thread(target=one, args=(i,)) for i in range(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 120
    with server.client() as c:
        while "sdxl_queue_depth 0.0" not in c.get("/metrics").text and time.monotonic() < deadline:
            time.sleep(0.1)
    time.sleep(2.0)  # the last running call stops at its next step; its stores (if any) land meanwhile
    orphans = {p.stem for p in image_dir.glob("*.png")} - before - answered
    return {"requests": requests, "hung_up": hung_up, "answered_images": len(answered), "orphans": len(orphans)}


def _series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def metric_labels(server: BenchServer, rng: random.Random) -> dict[str, Any]:
    with server.client() as c:
        before = c.get("/metrics").text
        for i in range(300):
            method = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(3, 200)))
            c.request(method, f"/made-up/{i}/{method.lower()}")
        after = c.get("/metrics").text
    return {
        "series_before": _series(before),
        "series_after": _series(after),
        "bytes_before": len(before),
        "bytes_after": len(after),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.races")
    parser.add_argument("--jobs", type=int, default=40, help="async jobs in the cancel races (default 40)")
    parser.add_argument("--disconnects", type=int, default=16, help="sync requests that hang up (default 16)")
    args = parser.parse_args()
    rng = random.Random(13)
    from app.engine.models.tiny.build import ensure_tiny_models

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache, images = root / "models", root / "images"
        ensure_tiny_models(cache)
        settings: dict[str, Any] = {
            "model": "tiny",
            "cache_dir": cache,
            "image_dir": images,
            "max_batch": 2,
            "max_queue": 256,
        }
        with running("races", root, **settings) as server:
            print("cancel_races", json.dumps(cancel_races(server, args.jobs, rng)))
            print("disconnects", json.dumps(disconnects(server, images, args.disconnects, rng)))
            print("metric_labels", json.dumps(metric_labels(server, rng)))


if __name__ == "__main__":
    main()
