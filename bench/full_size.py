"""`python -m bench --full-size [--device cuda]`: the real SDXL base at full size, eager and compiled, bare and served.

The real architecture (bench/sdxl's configs) with random weights, built on the target device in the target dtype:
no download, and random weights cost the same compute as trained ones. 1024², 30 steps, guidance 5 by default.
Measured, for batch 1 and batch B:
  - seconds per image of the bare diffusers call, eager; then compiled with the service's own `Compiler`
    (app/engine/gpu/compiled.py), after one untimed call of each shape, whose time and the compiler's are
    reported apart;
  - the batch gain (seconds per image at batch 1 / at batch B) and the peak device memory of each config
    (CUDA's max_memory_allocated; not measured elsewhere);
  - the service / bare ratios: the pipeline is saved (safetensors, in its dtype), the real service is started on
    that directory (bench/server.py), and one request is timed against the bare call, B clients against the bare
    batch B (with compile on, both sides compiled).
`--arch tiny` builds the tiny model's architecture instead: a CPU smoke run of the same code path.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.workload import BarePipeline, Seeds, Workload, quiet_libraries, say

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
# The published SDXL scheduler config (as the tiny pipeline's in app/engine/models/tiny/parts.py).
SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "timestep_spacing": "leading",
    "steps_offset": 1,
}


@dataclass(frozen=True)
class Options:
    device: str
    dtype: str
    arch: str
    workload: Workload
    batch: int
    compile: bool
    service: bool
    warmup: int  # untimed calls per config (the compiled configs' first call is one of them)
    repeats: int  # timed calls per config
    single_samples: int  # request + bare call pairs for the single-request ratio (after 1-2 untimed pairs)
    out: Path


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench --full-size", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), help="float16 on cuda, float32 on cpu")
    parser.add_argument("--arch", choices=("sdxl", "tiny"), default="sdxl")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (default 1024)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=4, help="the larger batch, B (default 4)")
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    parser.add_argument("--no-service", action="store_true", help="the bare pipeline only")
    parser.add_argument("--quick", action="store_true", help="one timed call per config: a smoke run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.batch < 2:
        parser.error("--batch must be at least 2 (batch 1 is always measured)")
    return Options(
        device=args.device,
        dtype=args.dtype or ("float16" if args.device == "cuda" else "float32"),
        arch=args.arch,
        workload=Workload(size=args.size, steps=args.steps, guidance=args.guidance),
        batch=args.batch,
        compile=not args.no_compile,
        service=not args.no_service,
        warmup=1,
        repeats=1 if args.quick else 3,
        single_samples=1 if args.quick else 3,
        out=args.out,
    )


# --- building ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def default_dtype(dtype: Any) -> Iterator[None]:
    """Within: new floating-point tensors are `dtype`, so weights are initialised in it (no fp32 copy first)."""
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def build_pipeline(arch: str, device: str, dtype_name: str) -> Any:
    """An SDXL text-to-image pipeline with random weights on `device` in `dtype_name`: the real architecture
    (`sdxl`) or the tiny model's (`tiny`). The tokenizer is the tiny model's either way: its ids fit the real
    49,408-token vocabulary, and tokenizing costs nothing next to the UNet."""
    import diffusers as _diffusers
    import torch

    from app.engine.models.tiny.parts import make_pipelines, make_tokenizer

    diffusers: Any = _diffusers  # untyped constructors
    dtype = getattr(torch, dtype_name)
    if arch == "tiny":
        base, _refiner = make_pipelines(first_seed=0)
        return base.to(device, dtype)
    from bench.sdxl import component

    torch.manual_seed(0)
    # Initialised where they will run: 3.5 B parameters take seconds on a GPU, minutes on a CPU.
    with torch.device(device), default_dtype(dtype):
        parts = {name: component(name) for name in ("unet", "vae", "text_encoder", "text_encoder_2")}
    pipe = diffusers.StableDiffusionXLPipeline(
        **parts,
        tokenizer=make_tokenizer(),
        tokenizer_2=make_tokenizer(),
        scheduler=diffusers.EulerDiscreteScheduler(**SCHEDULER),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    return pipe.to(device, dtype)


def param_counts(pipe: Any) -> dict[str, int]:
    return {
        name: sum(p.numel() for p in getattr(pipe, name).parameters())
        for name in ("unet", "vae", "text_encoder", "text_encoder_2")
    }


# --- measuring the bare pipeline --------------------------------------------------------------------------


@dataclass
class BareConfig:
    mode: str  # "eager" or "compiled"
    batch: int
    call_seconds: list[float]  # the timed calls
    peak_bytes: int | None  # CUDA max_memory_allocated over this config's calls; None elsewhere

    @property
    def seconds_per_image(self) -> float:
        return statistics.median(self.call_seconds) / self.batch


def _synchronize(device: str) -> Callable[[], None]:
    import torch

    if device == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def measure(bare: BarePipeline, opts: Options, mode: str, batch: int, seeds: Seeds, untimed: int) -> BareConfig:
    """`untimed` calls, then `opts.repeats` timed calls of `batch` images; the peak memory over all of them."""
    import torch

    sync = _synchronize(opts.device)
    cuda = opts.device == "cuda"
    if cuda:
        sync()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(untimed):
        bare(seeds.take(batch))
    samples = []
    for _ in range(opts.repeats):
        sync()
        started = time.perf_counter()
        bare(seeds.take(batch))  # PIL images out: the result is on the host, so the call has finished
        sync()
        samples.append(time.perf_counter() - started)
    peak = int(torch.cuda.max_memory_allocated()) if cuda else None
    return BareConfig(mode, batch, samples, peak)


def first_calls(bare: BarePipeline, opts: Options, seeds: Seeds) -> dict[str, float]:
    """One call of each batch size after compiling: where the graphs are built (what the service's warm-up does)."""
    sync = _synchronize(opts.device)
    seconds = {}
    for batch in (1, opts.batch):
        sync()
        started = time.perf_counter()
        bare(seeds.take(batch))
        sync()
        seconds[str(batch)] = time.perf_counter() - started
    return seconds


# --- the service ------------------------------------------------------------------------------------------


def measure_service(
    bare: BarePipeline, model_dir: Path, opts: Options, bare_batch: BareConfig, seeds: Seeds
) -> dict[str, Any]:
    """The real service on the saved pipeline: one request vs the bare call, B clients vs the bare batch B."""
    from bench.latency import single_request
    from bench.server import running
    from bench.throughput import measure_server

    started = time.perf_counter()
    w = opts.workload
    with tempfile.TemporaryDirectory(prefix="sdxl-bench-service-") as images:
        # An entry whose defaults are the workload, so the service's startup warm-up (and its compile) runs at
        # the benchmark's size rather than SDXL's default 1024² (minutes per call for --arch tiny on a CPU).
        models_file = Path(images) / "models.json"
        entry = {"source": str(model_dir), "size": w.size, "steps": w.steps, "guidance": w.guidance}
        models_file.write_text(json.dumps({"models": {"bench": entry}}))
        settings: dict[str, Any] = {
            "model": "bench",
            "models_file": models_file,
            # A directory that does not exist: the refiner is refused at startup (and skipped by the warm-up)
            # instead of being fetched from the hub, which the GPU machine cannot reach.
            "refiner_model": str(model_dir / "no-refiner"),
            "device": opts.device,
            "dtype": opts.dtype,
            "watermark": False,  # like for like with the bare pipeline
            "max_batch": opts.batch,
            "torch_compile": opts.compile,
            "image_dir": Path(images) / "images",
        }
        # Loading gigabytes and compiling at startup take longer than the CPU suite's tiny model.
        with running(f"full-size-{opts.device}", opts.out, startup_timeout_s=600, **settings) as server:
            ready_s = time.perf_counter() - started
            say(f"bench: service ready in {ready_s:.1f}s; one request vs the bare call")
            # Untimed first: the first requests after the warm-up still pay one-off costs (seconds on a CPU).
            single = single_request(server, bare, opts.single_samples, seeds, untimed=1 if opts.repeats == 1 else 2)
            say(f"bench: service, {opts.batch} clients")
            # One untimed round of B requests, then timed images: B (quick), 2B otherwise.
            images_timed = opts.batch * (1 if opts.repeats == 1 else 2)
            rate = measure_server(server, "service", opts.batch, images_timed, 1, seeds, opts.workload)
    served_per_image = rate.seconds / rate.images
    return {
        "compiled": opts.compile,
        "ready_seconds": round(ready_s, 2),
        "single": {
            "samples": single.samples,
            "e2e_ms": single.e2e_ms,
            "bare_ms": single.bare_ms,
            "ratio": single.ratio,
            "stages_ms": single.stages_ms,
        },
        "clients": {
            "clients": opts.batch,
            "images": rate.images,
            "seconds_per_image": served_per_image,
            "mean_batch": rate.mean_batch,
            "bare_seconds_per_image": bare_batch.seconds_per_image,
            "ratio": served_per_image / bare_batch.seconds_per_image,
        },
    }


# --- the run ----------------------------------------------------------------------------------------------


def run(opts: Options, save: Callable[[dict[str, Any]], None] = lambda result: None) -> dict[str, Any]:
    """Every measurement; `save(result so far)` after each, so that a run cut short still leaves its numbers."""
    import diffusers
    import torch

    from app.engine.gpu.compiled import Compiler

    quiet_libraries()
    if opts.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device (use --device cpu for a CPU run)")
    seeds = Seeds()
    w = opts.workload
    say(f"bench: building the {opts.arch} pipeline on {opts.device}/{opts.dtype} with random weights")
    started = time.perf_counter()
    pipe = build_pipeline(opts.arch, opts.device, opts.dtype)
    build_s = time.perf_counter() - started
    meta: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "device_name": torch.cuda.get_device_name() if opts.device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": sys.version.split()[0],
        "params": param_counts(pipe),
        "build_seconds": round(build_s, 2),
    }
    bare = BarePipeline.of(pipe, w)
    result: dict[str, Any] = {"meta": meta, "bare": [], "batch_gain": {}, "compile": None, "service": None}

    with tempfile.TemporaryDirectory(prefix="sdxl-bench-full-size-") as tmp:
        model_dir = Path(tmp) / "model"
        if opts.service:  # saved before compiling: the service loads and compiles its own copy
            say(f"bench: saving the pipeline ({opts.dtype}, safetensors) for the service")
            pipe.save_pretrained(model_dir, safe_serialization=True)

        configs: dict[tuple[str, int], BareConfig] = {}
        for batch in (1, opts.batch):
            say(f"bench: bare eager, batch {batch}, {w.size}², {w.steps} steps")
            configs["eager", batch] = measure(bare, opts, "eager", batch, seeds, opts.warmup)
            _record(result, configs, opts.batch, save)
        if opts.compile:
            compiler = Compiler()
            compiler.compile(pipe, decoder=opts.device != "cpu")  # as the service does (runner.py)
            say("bench: compiling (the first call of each batch size builds the graphs)")
            first = first_calls(bare, opts, seeds)
            result["compile"] = {
                "graphs": dict(compiler.graphs),
                "backend_seconds": compiler.seconds,
                "first_call_seconds": first,
            }
            save(result)
            for batch in (1, opts.batch):
                say(f"bench: bare compiled, batch {batch}")
                configs["compiled", batch] = measure(bare, opts, "compiled", batch, seeds, opts.warmup - 1)
                # Graphs built during the timed calls would be in their times: the same count as before says none.
                result["compile"]["graphs_after_timed"] = dict(compiler.graphs)
                _record(result, configs, opts.batch, save)
        if opts.service:
            if opts.device == "cuda":
                torch.cuda.empty_cache()  # the bare batches' cached blocks: the service sizes its budget on free memory
            mode = "compiled" if opts.compile else "eager"
            result["service"] = measure_service(bare, model_dir, opts, configs[mode, opts.batch], seeds)
            save(result)
    return result


def _record(
    result: dict[str, Any], configs: dict[tuple[str, int], BareConfig], big: int, save: Callable[[dict[str, Any]], None]
) -> None:
    result["bare"] = [{**asdict(c), "seconds_per_image": c.seconds_per_image} for c in configs.values()]
    result["batch_gain"] = {
        mode: configs[mode, 1].seconds_per_image / config.seconds_per_image
        for (mode, batch), config in configs.items()
        if batch == big and (mode, 1) in configs
    }
    save(result)


def render(result: dict[str, Any]) -> str:
    opts = result["meta"]["options"]
    w = opts["workload"]
    lines = [
        f"full size: {opts['arch']} on {opts['device']} ({result['meta']['device_name']}), {opts['dtype']}, "
        f"{w['size']}², {w['steps']} steps, guidance {w['guidance']:g}",
        "",
        "| mode | batch | s / image | peak memory |",
        "| --- | ---: | ---: | ---: |",
    ]
    for config in result["bare"]:
        peak = config["peak_bytes"]
        memory = f"{peak / 2**30:.2f} GiB" if peak is not None else "not measured"
        lines.append(f"| {config['mode']} | {config['batch']} | {config['seconds_per_image']:.3f} | {memory} |")
    lines.append("")
    for mode, gain in result["batch_gain"].items():
        lines.append(f"batch gain ({mode}, s/image at 1 / at {opts['batch']}): {gain:.2f}x")
    if (compiled := result["compile"]) is not None:
        first = ", ".join(f"batch {b}: {s:.1f}s" for b, s in compiled["first_call_seconds"].items())
        lines.append(
            f"compile: {sum(compiled['graphs'].values())} graphs {compiled['graphs']} in "
            f"{compiled['backend_seconds']:.1f}s of backend time; first calls {first}"
        )
        if compiled.get("graphs_after_timed", compiled["graphs"]) != compiled["graphs"]:
            lines.append(f"WARNING: graphs were compiled during the timed calls: {compiled['graphs_after_timed']}")
    if (service := result["service"]) is not None:
        single, clients = service["single"], service["clients"]
        lines.append(
            f"service / bare ({'compiled' if service['compiled'] else 'eager'}): one request "
            f"{single['e2e_ms'] / 1000:.3f}s / {single['bare_ms'] / 1000:.3f}s = {single['ratio']:.3f}; "
            f"{clients['clients']} clients {clients['seconds_per_image']:.3f} / "
            f"{clients['bare_seconds_per_image']:.3f} s/image = {clients['ratio']:.3f} "
            f"(mean batch {clients['mean_batch']:.1f})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    # `timeout` (bench/gpu/run.sh) ends a run with SIGTERM: as SystemExit, the service's `with` block still stops
    # the server child instead of leaving it on the GPU.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    opts.out.mkdir(parents=True, exist_ok=True)
    path = opts.out / f"full-size-{opts.device}-{opts.arch}.json"

    def save(result: dict[str, Any]) -> None:
        result["meta"]["complete"] = False
        path.write_text(json.dumps(result, indent=2) + "\n")

    result = run(opts, save)
    result["meta"]["complete"] = True
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result), flush=True)
    say(f"bench: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
