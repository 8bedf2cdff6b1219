from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from PIL import Image

from app.engine.images.metadata import Provenance

ASYNC = {"Prefer": "respond-async"}
SLOW = {"prompt": "slow", "width": 512, "height": 512, "num_inference_steps": 24}


def provenance(**overrides: Any) -> Provenance:
    """A generated image's provenance (tiny, 256x256, 4 steps, seed 7); `overrides` set what a test is about."""
    values: dict[str, Any] = {
        "kind": "generate",
        "model": "tiny",
        "prompt": "x",
        "negative_prompt": None,
        "prompt_2": None,
        "negative_prompt_2": None,
        "seed": 7,
        "steps": 4,
        "guidance_scale": 5.0,
        "width": 256,
        "height": 256,
        "scheduler": "EulerDiscreteScheduler",
        "watermark": False,
    }
    return Provenance(**{**values, **overrides})


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def pixels(png: bytes) -> np.ndarray[Any, Any]:
    return np.asarray(decode(png).convert("RGB"), dtype=np.float64)


def assert_error(response: httpx.Response, status: int, type_: str, field: str | None = None) -> dict[str, Any]:
    """Every error has the one JSON shape; no traceback or file path leaks into it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"type", "message", "field", "details"}
    assert error["type"] == type_, error
    assert "Traceback" not in response.text and "/site-packages/" not in response.text
    if field is not None:
        named = {error["field"], *(d["field"] for d in error["details"])}
        assert field in named, error
    return error


def wait_ready(url: str, proc: subprocess.Popen[Any] | None = None, timeout: float = 90) -> None:
    """Poll /ready until 200; fail at once (with its output) if the server process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited early:\n{proc.communicate()[0]!r}")
        time.sleep(0.2)
    raise AssertionError(f"{url} did not become ready in {timeout:g}s")


def wait_for(c: httpx.Client, job_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = c.get(f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {statuses}")


def serve_env(model_cache: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment for a `python -m app serve` subprocess: ours without any SDXL_* or key, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDXL_") and k != "GENERATION_AUTH_KEY"}
    env.update(SDXL_CACHE_DIR=str(model_cache), IMAGE_DIR=str(tmp_path / "images"), HF_HUB_OFFLINE="1", **extra)
    return env


def kill_and_await(victim: subprocess.Popen[Any], tree: list[psutil.Process], timeout_s: float) -> float:
    """SIGKILL `victim` (what the OOM killer does: no shutdown at all), then wait for every process of `tree` to be
    gone; fails naming those left. The seconds they took."""
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    killed = time.monotonic()
    _, alive = psutil.wait_procs(tree, timeout=timeout_s)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
    return time.monotonic() - killed


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[Any]) -> Iterator[list[psutil.Process]]:
    """A list for the test to fill with `proc`'s process tree. Whatever of `proc` and the tree a failure leaves
    behind, orphaned, is killed after: not left for the next test or run."""
    tree: list[psutil.Process] = []
    try:
        yield tree
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
