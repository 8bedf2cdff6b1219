"""The targets from the issue, the printed tables, results.json and results.png."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.latency import Probe, Saturation, SingleRequest
from bench.throughput import Paired, Throughput

ON, OFF, BARE = "batching on", "batching off", "bare pipeline"
THREADS = "batching on, encoding in threads"  # SDXL_ENCODE_PROCESSES=0: as before issue 16
WATERMARK_NOTE = (
    "servers run with watermark=False (the bare pipeline has none); their numbers still include PNG encode + "
    "provenance + atomic store per image, which the bare pipeline does not do"
)


@dataclass
class Results:
    meta: dict[str, Any]
    throughput: list[Throughput]
    paired: Paired  # the 8-client target: each run between two bare batch-8 runs
    paired_off: Paired  # 8 clients with batching on, each run between two with batching off
    paired_threads: Paired  # the same with the encoding in threads (SDXL_ENCODE_PROCESSES=0)
    single: SingleRequest
    saturation: Saturation
    watermark_ms: float  # what SDXL_WATERMARK=true would add per 256x256 image (not in any number above)
    targets: list[Target] = field(default_factory=list)

    def rate(self, config: str, parallel: int) -> float:
        for t in self.throughput:
            if t.config == config and t.parallel == parallel:
                return t.images_per_s
        return math.nan


@dataclass
class Target:
    number: int  # the measurement 1..4
    name: str
    measured: float
    op: str  # ">=" or "<="
    target: float
    fmt: str  # format spec for both values, e.g. "{:.2f}x"
    detail: str

    @property
    def passed(self) -> bool:
        return self.measured >= self.target if self.op == ">=" else self.measured <= self.target


def evaluate(r: Results) -> list[Target]:
    p, o, s, h = r.paired, r.paired_off, r.single, r.saturation.health
    return [
        Target(
            1,
            f"8 clients batching on / bare batch 8 (median of {len(p.ratios)}, each run between two bare runs)",
            p.ratio,
            ">=",
            0.9,
            "{:.2f}x",
            f"rounds {_joined(p.ratios)}; mean batch {p.mean_batch:.2f}",
        ),
        Target(
            1,
            f"8 clients batching on / batching off (median of {len(o.ratios)}, each run between two runs with it off)",
            o.ratio,
            ">=",
            1.4,
            "{:.2f}x",
            f"rounds {_joined(o.ratios)}; on {_joined(o.ips)}, off around them {_joined(o.reference_ips)} images/s; "
            f"mean batch {o.mean_batch:.2f}",
        ),
        Target(
            2, "/health p99, 8 clients saturating", h.p99, "<=", 50.0, "{:.1f} ms", f"p50 {h.p50:.1f} ms, n={_n(h)}"
        ),
        Target(
            3,
            "one request e2e / bare call (medians)",
            s.ratio,
            "<=",
            1.10,
            "{:.3f}",
            f"{s.e2e_ms:.0f} ms / {s.bare_ms:.0f} ms, n={s.samples}",
        ),
        Target(
            4,
            "GPU owner idle share, saturated",
            r.saturation.idle_share,
            "<=",
            0.03,
            "{:.1%}",
            f"window {r.saturation.window_s:.1f} s, {r.saturation.images} images, "
            f"mean batch {r.saturation.mean_batch:.2f}",
        ),
    ]


def _joined(values: list[float], digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def _n(p: Probe) -> str:
    return f"{len(p.samples_ms)}" + (f", {len(p.errors)} errors" if p.errors else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return [lines[0], "  ".join("-" * w for w in widths), *lines[1:]]


def render(r: Results) -> str:
    m = r.meta
    quick = "QUICK RUN: few requests, noisy; do not compare or quote" if m["quick"] else "full run"
    lines = [
        f"sdxl-serve benchmark ({quick})",
        f"tiny model on CPU, {m['size']}x{m['size']}, {m['steps']} steps, guidance {m['guidance']}, fixed seeds; "
        f"torch {m['torch']} with {m['torch_threads']} threads (servers: {m['server_torch_threads']}), "
        f"{m['cpus']} CPUs; load average {m['loadavg_start']:.2f} at start, {m['loadavg_end']:.2f} at end",
        "",
        f"1. Throughput: {WATERMARK_NOTE}.",
        "   Service: concurrent HTTP clients, each sending back to back; bare: prompt-list batch size.",
    ]
    rows = [
        [t.config, str(t.parallel), str(t.images), f"{t.seconds:.2f}", f"{t.images_per_s:.2f}", f"{t.mean_batch:.2f}"]
        for t in sorted(r.throughput, key=lambda t: ((ON, THREADS, OFF, BARE).index(t.config), t.parallel))
    ]
    lines += _table(["config", "clients/batch", "images", "seconds", "images/s", "mean batch"], rows)
    lines += ["", "Targets (from the issue):"]
    rows = [
        [
            str(t.number),
            t.name,
            t.fmt.format(t.measured),
            f"{t.op} {t.fmt.format(t.target)}",
            "PASS" if t.passed else "MISS",
            t.detail,
        ]
        for t in r.targets
    ]
    lines += _table(["#", "measurement", "measured", "target", "result", "detail"], rows)
    d, s, rp, ro, cpus = r.saturation.download, r.single, r.paired, r.paired_off, r.meta["cpus"]
    stages = ", ".join(f"{k.removesuffix('_ms')} {v:.1f}" for k, v in s.stages_ms.items())
    lines += [
        "",
        "Also measured (no target):",
        f"  bare batch 8 / bare batch 1: {r.rate(BARE, 8) / r.rate(BARE, 1):.2f}x, the most batching can gain here",
        f"  8 clients / bare batch 8 from the table above (phases minutes apart): "
        f"{r.rate(ON, 8) / r.rate(BARE, 8):.2f}x; the target's rounds: service {_joined(rp.ips)} "
        f"images/s, bare before, between and after {_joined(rp.reference_ips)}",
        f"  CPU per image in those rounds: service {_joined(rp.cpu_ms, 1)} ms (its processes and the "
        f"load generator, on {_joined(rp.cores)} cores), bare batch 8 {_joined(rp.reference_cpu_ms, 1)} ms (on "
        f"{_joined(rp.reference_cores)} cores); bare / service, paired as the ratios are: {_joined(rp.cpu_ceilings)}, "
        f"median {rp.cpu_ceiling:.2f}: the most the ratio can be while both are CPU-bound on these {cpus} cores",
        f"  8 clients batching on / off from the table above (phases apart): {r.rate(ON, 8) / r.rate(OFF, 8):.2f}x; "
        f"CPU per image in the target's rounds: on {_joined(ro.cpu_ms, 1)} ms, off {_joined(ro.reference_cpu_ms, 1)} "
        f"ms (off / on, paired: {_joined(ro.cpu_ceilings)})",
        f"  8 clients, encoding in threads (SDXL_ENCODE_PROCESSES=0) / bare batch 8, each run between two bare "
        f"runs: {r.paired_threads.ratio:.2f}x (rounds {_joined(r.paired_threads.ratios)}; CPU ceiling "
        f"{r.paired_threads.cpu_ceiling:.2f}; in worker processes, the default: {r.paired.ratio:.2f}x)",
        f"  /download p50 {d.p50:.1f} ms, p99 {d.p99:.1f} ms (n={_n(d)}) under the same saturation",
        f"  one request, the service's own median timings (ms): {stages}",
        f"  owner busy share from scheduler._busy_s deltas: {r.saturation.scheduler_busy_share:.1%} "
        f"(off by up to a batch at each window edge; the target uses the exact owner clock: "
        f"{r.saturation.busy_share:.1%})",
        f"  invisible watermark, off in every run above, would add {r.watermark_ms:.1f} ms per image (median)",
    ]
    return "\n".join(lines)


def to_json(r: Results) -> dict[str, Any]:
    def probe(p: Probe) -> dict[str, Any]:
        return {"path": p.path, "n": len(p.samples_ms), "p50_ms": p.p50, "p99_ms": p.p99, "errors": p.errors}

    def paired(p: Paired) -> dict[str, Any]:
        return {
            "runs": [_throughput(t) for t in p.runs],
            "references": [_throughput(t) for t in p.references],
            "mean_batch": p.mean_batch,
            "ratios": p.ratios,
            "ratio": p.ratio,
            "cpu_ceilings": p.cpu_ceilings,
            "cpu_ceiling": p.cpu_ceiling,
        }

    sat = r.saturation
    return {
        "meta": {**r.meta, "note": WATERMARK_NOTE},
        "throughput": [_throughput(t) for t in r.throughput],
        "paired": paired(r.paired),
        "paired_off": paired(r.paired_off),
        "paired_threads": paired(r.paired_threads),
        "single_request": {**asdict(r.single), "ratio": r.single.ratio},
        "saturation": {
            "clients": sat.clients,
            "window_s": sat.window_s,
            "images": sat.images,
            "mean_batch": sat.mean_batch,
            "busy_share": sat.busy_share,
            "idle_share": sat.idle_share,
            "scheduler_busy_share": sat.scheduler_busy_share,
            "health": probe(sat.health),
            "download": probe(sat.download),
        },
        "watermark_ms": r.watermark_ms,
        "targets": [{**asdict(t), "passed": t.passed} for t in r.targets],
    }


def _throughput(t: Throughput) -> dict[str, Any]:
    return {**asdict(t), "images_per_s": t.images_per_s, "cpu_ms_per_image": t.cpu_ms_per_image, "cores": t.cores}


def write(out: Path, r: Results) -> tuple[Path, Path]:
    json_path, png_path = out / "results.json", out / "results.png"
    json_path.write_text(json.dumps(to_json(r), indent=2, default=str) + "\n", encoding="utf-8")
    chart(r, png_path)
    return json_path, png_path


def chart(r: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ((ax1, ax2), (ax3, ax4)) = plt.subplots(2, 2, figsize=(12, 8.5))
    title = "sdxl-serve benchmark: tiny model, CPU, 256x256, 4 steps, servers without watermark"
    fig.suptitle(title + (" (QUICK: noisy)" if r.meta["quick"] else ""))

    parallels = sorted({t.parallel for t in r.throughput})
    width = 0.27
    for i, config in enumerate((ON, OFF, BARE)):
        xs = [p + (i - 1) * width for p in range(len(parallels))]
        ax1.bar(xs, [r.rate(config, p) for p in parallels], width, label=config)
    # The target's own bare rate: the mean of the bare runs beside its rounds, not the bar from another phase.
    paired_bare = sum(r.paired.reference_ips) / len(r.paired.reference_ips)
    ax1.axhline(0.9 * paired_bare, color="k", ls="--", lw=1, label="target for batching on, 8: 0.9 x bare 8 (paired)")
    ax1.set_ylim(0, 1.4 * max(t.images_per_s for t in r.throughput))  # room for the legend
    ax1.set_xticks(range(len(parallels)), [str(p) for p in parallels])
    ax1.set(title="1. Throughput", xlabel="HTTP clients (bare: batch size)", ylabel="images/s")
    ax1.legend(fontsize=8)

    sat = r.saturation
    probes = (sat.health, sat.download)
    ax2.bar([0, 1], [p.p50 for p in probes], 0.35, label="p50")
    ax2.bar([0.35, 1.35], [p.p99 for p in probes], 0.35, label="p99")
    ax2.axhline(50, color="k", ls="--", lw=1, label="/health p99 target")
    ax2.set_xticks([0.175, 1.175], ["/health", "/download/{id}"])
    ax2.set(title=f"2. Latency, {sat.clients} clients saturating", ylabel="ms")
    ax2.legend(fontsize=8)

    s = r.single
    ax3.bar(["end to end", "bare call"], [s.e2e_ms, s.bare_ms], color=["tab:blue", "tab:green"])
    ax3.axhline(1.1 * s.bare_ms, color="k", ls="--", lw=1, label="target: 1.10 x bare")
    ax3.set(title=f"3. One request, median of {s.samples} (ratio {s.ratio:.3f})", ylabel="ms")
    ax3.legend(fontsize=8)

    ax4.bar(["busy", "idle"], [100 * sat.busy_share, 100 * sat.idle_share], color=["tab:blue", "tab:red"])
    ax4.axhline(3, color="k", ls="--", lw=1, label="idle target: 3 %")
    ax4.set(title=f"4. GPU owner over a {sat.window_s:.0f} s saturated window", ylabel="% of window")
    ax4.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
