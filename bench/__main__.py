"""`python -m bench [--quick] [--out DIR]`: every benchmark side by side in one run, printed and saved.

`python -m bench --full-size [--device cuda ...]` runs the full-size mode instead (bench/full_size.py).

Phases, one at a time so that nothing else competes for the CPU:
  1. the bare pipeline at batch sizes 1, 4, 8 (in this process, no server running);
  2. a server with batching on (default settings: max_batch 8, batch window 50 ms): 1, 4, 8 clients;
     8 clients again, each run between two bare batch-8 runs (the target's ratio; bench.throughput.Paired says
     why); one request vs the bare call, alternating; then 8 clients saturating it while /health, /download and
     the owner's busy time are read;
  3. beside it (idle while the other is measured), a server with batching off (max_batch 1): 1, 4, 8 clients; then
     8 clients on the batching-on server, each run between two runs on the batching-off one (the on ÷ off target);
  4. a server with batching on and the encoding in threads (SDXL_ENCODE_PROCESSES=0, as before issue 16): 8 clients,
     then 8 clients between bare batch-8 runs as in phase 2.
Every server runs with watermark=False, for a like-for-like comparison with the bare pipeline (it says so in
the table); the watermark's own cost is measured separately. torch's thread count is left at its default.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.latency import saturated, single_request
from bench.server import running
from bench.throughput import (
    Paired,
    Side,
    Throughput,
    bare_side,
    measure_bare,
    measure_paired,
    measure_server,
    server_side,
)
from bench.workload import GUIDANCE, SIZE, STEPS, BarePipeline, Seeds, say, watermark_ms

PARALLEL = (1, 4, 8)  # HTTP clients, and the bare pipeline's batch sizes
SATURATING_CLIENTS = 8
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Plan:
    images: int  # timed images per throughput config
    warmup_rounds: int  # untimed rounds (of `clients` requests, or bare calls) before each config
    single_samples: int  # requests (and bare calls) for the single-request ratio
    saturation_s: float  # the saturated window
    paired_rounds: int  # 8-client runs, each between two bare batch-8 runs


FULL = Plan(images=48, warmup_rounds=2, single_samples=10, saturation_s=30.0, paired_rounds=3)
QUICK = Plan(images=8, warmup_rounds=1, single_samples=3, saturation_s=5.0, paired_rounds=1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--full-size" in argv:  # its own flags (--device, --size, ...): its own parser
        from bench import full_size

        return full_size.main([a for a in argv if a != "--full-size"])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few requests: a smoke run, not numbers to quote")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    import diffusers
    import torch

    from app.config import Settings
    from app.engine.models.tiny.build import ensure_tiny_models

    tiny: dict[str, Any] = {"model": "tiny"}
    cache_dir = Settings(**tiny).cache_dir  # SDXL_CACHE_DIR or the default, as for `make serve`
    meta = {
        "quick": args.quick,
        "plan": asdict(plan),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "size": SIZE,
        "steps": STEPS,
        "guidance": GUIDANCE,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "thread_env": {k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS")},
        "loadavg_start": os.getloadavg()[0],
    }
    say(f"bench: {'quick' if args.quick else 'full'} run, results in {out}")
    base_dir = ensure_tiny_models(cache_dir).base
    bare = BarePipeline(base_dir)
    seeds = Seeds()
    rates: list[Throughput] = []

    for batch in PARALLEL:
        say(f"bench: bare pipeline, batch {batch}")
        rates.append(measure_bare(bare, batch, plan.images, plan.warmup_rounds, seeds))

    common: dict[str, Any] = {"model": "tiny", "cache_dir": cache_dir, "device": "cpu", "watermark": False}
    n = SATURATING_CLIENTS
    bare_n = bare_side(bare, n, seeds)

    def paired(measured: Side, reference: Side) -> Paired:
        return measure_paired(measured, reference, plan.images, plan.paired_rounds, warmup_images=n)

    with tempfile.TemporaryDirectory(prefix="sdxl-bench-images-") as images:
        with running("batching-on", out, image_dir=Path(images), max_batch=8, **common) as on:
            meta["server_torch_threads"] = on.torch_threads
            for clients in PARALLEL:
                say(f"bench: batching on, {clients} clients")
                rates.append(measure_server(on, report.ON, clients, plan.images, plan.warmup_rounds, seeds))
            say(f"bench: {n} clients, each run between two bare batch-{n} runs")
            paired_bare = paired(server_side(on, report.ON, n, seeds), bare_n)
            say("bench: one request vs the bare call")
            single = single_request(on, bare, plan.single_samples, seeds)
            say(f"bench: {n} clients saturating for {plan.saturation_s:g}s, probing")
            saturation = saturated(on, n, plan.saturation_s, seeds)
            # The same image folder: the off server sweeps stale temporary files as it starts, which is safe only
            # because the on server is idle then (nothing is being written)
            with running("batching-off", out, image_dir=Path(images), max_batch=1, **common) as off:
                for clients in PARALLEL:
                    say(f"bench: batching off, {clients} clients")
                    rates.append(measure_server(off, report.OFF, clients, plan.images, plan.warmup_rounds, seeds))
                say(f"bench: {n} clients, each run with batching on between two with batching off")
                paired_off = paired(server_side(on, report.ON, n, seeds), server_side(off, report.OFF, n, seeds))
        with running("encoding-threads", out, image_dir=Path(images), max_batch=8, encode_processes=0, **common) as th:
            say(f"bench: batching on, encoding in threads, {n} clients")
            rates.append(measure_server(th, report.THREADS, n, plan.images, plan.warmup_rounds, seeds))
            say(f"bench: encoding in threads, {n} clients, each run between two bare runs")
            paired_threads = paired(server_side(th, report.THREADS, n, seeds), bare_n)

    watermark = watermark_ms(bare(seeds.take(1))[0], repeats=max(plan.single_samples, 5))
    meta["loadavg_end"] = os.getloadavg()[0]
    results = report.Results(meta, rates, paired_bare, paired_off, paired_threads, single, saturation, watermark)
    results.targets = report.evaluate(results)
    print(report.render(results), flush=True)
    json_path, png_path = report.write(out, results)
    say(f"bench: wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
