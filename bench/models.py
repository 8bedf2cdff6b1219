"""`python -m bench.models [--samples N]`: what the model registry's memory and switching cost, on the tiny models.

It drives the same `Runner` the service's GPU owner uses (in this process, nothing else running):
  1. bytes added by loading the refiner / bytes of the refiner's own UNet (goal 1.00: its text encoder and VAE are
     the base's objects). Bytes are distinct tensor storages across every loaded pipeline; RSS growth is shown too;
  2. switching back to a model from the CPU tier / loading it from disk (goal <= 0.10), medians of alternating
     switches between two non-pinned models with room for one on the device;
  3. bytes added by the first img2img, inpaint and ControlNet calls (goal 0 for img2img and inpaint: from_pipe);
  4. one call with a LoRA active / the same call without (unfused adapters cost a little per step).
On a CPU-only machine "device" and "CPU tier" are the same memory, so (2) measures the disk load and pipeline
construction it saves, not a host-to-GPU copy; the file reads come from the page cache after the first load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
from PIL import Image

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _runner(cache_dir: Path, work: Path, **overrides: Any) -> Any:
    from app.config import Settings
    from app.engine.gpu import loader
    from app.engine.gpu.runner import Runner
    from app.engine.models.registry import build_registry
    from app.engine.models.tiny.build import ensure_tiny_models

    paths = ensure_tiny_models(cache_dir)
    models_file = work / "models.json"
    models_file.write_text(json.dumps({"models": {"tiny-c": {"source": str(paths.base_b), "family": "tiny"}}}))
    settings = Settings(
        model="tiny",
        cache_dir=cache_dir,
        image_dir=work / "images",
        models_file=models_file,
        watermark=False,
        **overrides,
    )
    runner = Runner(settings, build_registry(settings), loader.resolve_placement(settings), lambda *_: None)
    runner.load_default()
    return runner


def _loaded_bytes(runner: Any) -> int:
    from app.engine.gpu.model_cache import pipeline_bytes

    pipes = [pipe for _, pipe in runner.cache.loaded()]
    views = [view for slot in runner.cache.slots.values() for view in slot.views.values()]
    extra = [runner.refiner] if runner.refiner is not None else []
    return pipeline_bytes(*pipes, *views, *extra)


def _params(**fields: Any) -> Any:
    from app.engine.jobs.items import GenerateParams, Setup

    values: dict[str, Any] = {"steps": 2, "setup": Setup("tiny"), **fields}
    return GenerateParams("a lighthouse", None, None, None, 256, 256, guidance=5.0, seed=1, **values)


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def refiner_bytes(runner: Any) -> dict[str, float]:
    from app.engine.gpu.model_cache import pipeline_bytes

    rss = psutil.Process().memory_info().rss
    before = _loaded_bytes(runner)
    runner.load_refiner()
    added = _loaded_bytes(runner) - before
    unet = pipeline_bytes(SimpleNamespace(components={"unet": runner.refiner.unet}))
    return {
        "added_bytes": added,
        "refiner_unet_bytes": unet,
        "ratio": added / unet,
        "rss_added_bytes": psutil.Process().memory_info().rss - rss,
    }


def switching(cache_dir: Path, work: Path, samples: int) -> dict[str, float]:
    def alternate(runner: Any) -> list[float]:
        times = []
        for i in range(samples + 1):
            model = ("tiny-b", "tiny-c")[i % 2]
            times.append(_timed(partial(runner.cache.get, model)))
        return times[1:]  # the first is tiny-b's first load in both runs

    cold = alternate(_runner(cache_dir, work / "cold", model_cache_max_models=2, model_cpu_tier=0))
    tiered_runner = _runner(cache_dir, work / "tier", model_cache_max_models=2, model_cpu_tier=1)
    tiered = alternate(tiered_runner)
    assert tiered_runner.cache.slots["tiny-b"].loads == 1, "switches must come from the CPU tier"
    return {
        "disk_load_s": statistics.median(cold),
        "cpu_tier_switch_s": statistics.median(tiered),
        "ratio": statistics.median(tiered) / statistics.median(cold),
    }


def views_bytes(runner: Any) -> dict[str, int]:
    from app.engine.jobs.items import Control

    image = Image.new("RGB", (256, 256), (90, 120, 200))
    mask = Image.new("L", (256, 256), 255)
    calls = {
        "img2img": _params(kind="img2img", image=image, strength=0.5, steps=4),
        "inpaint": _params(kind="inpaint", image=image, mask=mask, strength=1.0),
        "controlnet": _params(control=Control("tiny-controlnet", image, 1.0)),
    }
    added = {}
    for name, params in calls.items():
        before = _loaded_bytes(runner) + _module_bytes(runner.controlnets)
        runner.generate([params], lambda: None)
        added[name] = _loaded_bytes(runner) + _module_bytes(runner.controlnets) - before
    return added


def _module_bytes(components: Any) -> int:
    # Counted from the tensors themselves, not the cache's own figure: this checks that figure's source.
    return sum(t.untyped_storage().nbytes() for _, module in components.loaded() for t in module.state_dict().values())


def lora_cost(runner: Any, samples: int) -> dict[str, float]:
    from app.engine.jobs.items import Setup

    plain, adapted = _params(steps=4), _params(steps=4, setup=Setup("tiny", loras=(("tiny-lora", 1.0),)))
    runner.generate([adapted], lambda: None)  # load the adapter once
    times: dict[str, list[float]] = {"plain": [], "lora": []}
    for _ in range(samples):
        times["plain"].append(_timed(lambda: runner.generate([plain], lambda: None)))
        times["lora"].append(_timed(lambda: runner.generate([adapted], lambda: None)))
    p, a = statistics.median(times["plain"]), statistics.median(times["lora"])
    return {"plain_s": p, "lora_s": a, "ratio": a / p}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10, help="switches and calls per median (default 10)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        work = Path(tmp)
        cache_dir = work / "cache"
        for sub in ("main", "cold", "tier"):
            (work / sub).mkdir()
        runner = _runner(cache_dir, work / "main")
        results: dict[str, Any] = {
            "refiner": refiner_bytes(runner),
            "views_added_bytes": views_bytes(runner),
            "lora": lora_cost(runner, args.samples),
            "switching": switching(cache_dir, work, args.samples),
        }
    r, s, v, lo = results["refiner"], results["switching"], results["views_added_bytes"], results["lora"]
    print("model registry, tiny models on CPU (bench/models.py)")
    print(
        f"  refiner: bytes added / its UNet's bytes       {r['ratio']:.3f}  (goal 1.00; "
        f"{r['added_bytes'] / 1e6:.2f} MB of {r['refiner_unet_bytes'] / 1e6:.2f} MB; "
        f"RSS +{r['rss_added_bytes'] / 1e6:.1f} MB)"
    )
    print(
        f"  switch back from the CPU tier / disk load     {s['ratio']:.3f}  (goal <= 0.10; "
        f"{s['cpu_tier_switch_s'] * 1000:.1f} ms vs {s['disk_load_s'] * 1000:.1f} ms)"
    )
    print(f"  bytes added by img2img / inpaint              {v['img2img']} / {v['inpaint']}  (goal 0)")
    print(f"  bytes added by ControlNet (its own weights)   {v['controlnet'] / 1e6:.2f} MB")
    print(
        f"  one call with a LoRA / without                {lo['ratio']:.3f}  "
        f"({lo['lora_s'] * 1000:.0f} ms vs {lo['plain_s'] * 1000:.0f} ms, 256², 4 steps)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "models.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
