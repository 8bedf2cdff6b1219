"""`python -m bench.setup [--routes uv pip] [--caches cold warm]`: a clean clone to its first downloaded image.

Each run clones HEAD into a fresh folder and installs the CPU lock there, by one of two routes that both honour
the lock exactly:
  uv   `make install`: the venv's pip installs uv from lock/uv.txt, then `uv pip sync` (what `make serve` does);
  pip  pip alone: `pip install --no-deps --require-hashes -r lock/runtime-cpu.txt` (the GPU route's commands).
Then it starts the server (tiny model, a fresh SDXL_CACHE_DIR, so the first start builds the tiny models as on a
new machine), waits for /ready, generates one image and downloads it. A `cold` cache is an empty uv or pip cache
(everything but torch is fetched from the index; torch comes from the machine's find-links either way, as the
issue's "when the torch wheel is already cached" asks); `warm` repeats the run with the cache the cold run left.
Times are wall-clock seconds, printed side by side and saved to bench/results/setup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.server import HOST, BenchServer, free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"


def _install(route: str, clone: Path, env: dict[str, str]) -> None:
    if route == "uv":
        subprocess.run(["make", "install"], cwd=clone, env=env, check=True, stdout=subprocess.DEVNULL)
        return
    py = str(clone / ".venv" / "bin" / "python")
    quiet = ["-q", "--disable-pip-version-check"]
    subprocess.run([sys.executable, "-m", "venv", ".venv"], cwd=clone, env=env, check=True)
    lock = ["--no-deps", "--require-hashes", "-r", "lock/runtime-cpu.txt"]
    subprocess.run([py, "-m", "pip", "install", *quiet, *lock], cwd=clone, env=env, check=True)
    project = ["--no-deps", "--no-build-isolation", "-e", "."]
    subprocess.run([py, "-m", "pip", "install", *quiet, *project], cwd=clone, env=env, check=True)


def _first_image(clone: Path, env: dict[str, str]) -> float:
    """Seconds from starting the server to holding its first PNG."""
    port = free_port()
    env = {**env, "SDXL_MODEL": "tiny", "SDXL_PORT": str(port), "SDXL_CACHE_DIR": str(clone / ".cache")}
    log_path = clone / "server.log"
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(clone / ".venv" / "bin" / "python"), "-m", "app", "serve"],
            cwd=clone,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = BenchServer("first-start", f"http://{HOST}:{port}", process, log_path)
    try:
        wait_ready(server)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            image = client.post("/generate", json={"prompt": "a lighthouse", "seed": 1}).json()["id"]
            png = client.get(f"/download/{image}")
            png.raise_for_status()
            assert png.content.startswith(b"\x89PNG")
        return time.perf_counter() - started
    finally:
        stop(process)


def run(route: str, cache: Path, cache_state: str) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory(prefix="sdxl-setup-") as tmp:
        clone = Path(tmp) / "sdxl-serve"
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_CACHE", "PIP_CACHE"))}
        env["UV_CACHE_DIR" if route == "uv" else "PIP_CACHE_DIR"] = str(cache)
        started = time.perf_counter()
        _install(route, clone, env)
        install_s = time.perf_counter() - started
        first_image_s = _first_image(clone, env)
    return {
        "route": route,
        "cache": cache_state,
        "install_s": round(install_s, 1),
        "start_to_image_s": round(first_image_s, 1),
        "total_s": round(install_s + first_image_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.setup", description=__doc__.splitlines()[0])
    parser.add_argument("--routes", nargs="+", choices=("uv", "pip"), default=["uv", "pip"])
    parser.add_argument("--caches", nargs="+", choices=("cold", "warm"), default=["cold", "warm"])
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sdxl-setup-caches-") as caches:
        for route in args.routes:
            cache = Path(caches) / route
            shutil.rmtree(cache, ignore_errors=True)
            for state in ("cold", "warm"):
                if state not in args.caches and not (state == "cold" and "warm" in args.caches):
                    continue  # a warm run needs the cold run before it to fill the cache
                row = run(route, cache, state)
                if state in args.caches:
                    rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n{'route':6} {'cache':6} {'install s':>10} {'start→image s':>14} {'total s':>8}")
    for row in rows:
        route, cache = row["route"], row["cache"]
        print(f"{route:6} {cache:6} {row['install_s']:>10} {row['start_to_image_s']:>14} {row['total_s']:>8}")
    by = {(r["route"], r["cache"]): float(r["total_s"]) for r in rows}
    for state in ("cold", "warm"):
        if ("uv", state) in by and ("pip", state) in by:
            print(f"pip ÷ uv, {state} cache: {by[('pip', state)] / by[('uv', state)]:.2f}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "setup.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
