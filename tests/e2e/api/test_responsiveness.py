"""The event loop never runs the model: /health and /download answer while a long generation runs."""

from __future__ import annotations

import threading
import time

import httpx

from tests.conftest import LiveServer


def test_health_and_download_stay_fast_during_a_long_generation(server: LiveServer, client: httpx.Client) -> None:
    image_id = client.post("/generate", json={"prompt": "x", "seed": 1}).json()["id"]
    result: dict[str, float] = {}

    def long_generation() -> None:
        started = time.perf_counter()
        with server.client() as c:
            r = c.post("/generate", json={"prompt": "slow", "width": 512, "height": 512, "num_inference_steps": 40})
            assert r.status_code == 200
        result["took"] = time.perf_counter() - started

    worker = threading.Thread(target=long_generation)
    worker.start()
    time.sleep(0.3)  # let it reach the pipeline
    latencies: list[float] = []
    while worker.is_alive() and len(latencies) < 40:
        started = time.perf_counter()
        assert client.get("/health").status_code == 200
        assert client.get(f"/download/{image_id}").status_code == 200
        latencies.append(time.perf_counter() - started)
        time.sleep(0.02)
    worker.join()
    assert len(latencies) >= 5, f"generation finished too fast to measure ({result})"
    assert max(latencies) < 0.5, latencies
    assert result["took"] > 5 * max(latencies)
