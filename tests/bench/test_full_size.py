"""bench/full_size.py (`python -m bench --full-size`): the real architecture's sizes on `meta`, and the whole mode
end to end on CPU with the tiny architecture, inductor and the real service (no stand-ins).

The end-to-end runs are split, compiled without the service and the service eager, because on 2 CPU cores a
compiling service at startup would add the compile time twice over. What the numbers are is not checked (a CPU
smoke run's timings mean nothing), only that every field is there and sane.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from bench.__main__ import main as bench_main
from bench.full_size import build_pipeline, param_counts
from tests.sdxl_meta import PARAMS

SMOKE = ["--device", "cpu", "--arch", "tiny", "--size", "256", "--steps", "2", "--batch", "2", "--quick"]


def _run(tmp_path: Path, *flags: str) -> dict[str, Any]:
    # Through `python -m bench`'s own entry point: the flag that picks the mode is part of what is tested.
    assert bench_main(["--full-size", *SMOKE, *flags, "--out", str(tmp_path)]) == 0
    result: dict[str, Any] = json.loads((tmp_path / "full-size-cpu-tiny.json").read_text())
    assert result["meta"]["complete"] is True
    assert result["meta"]["options"]["workload"] == {
        "size": 256,
        "steps": 2,
        "guidance": 5.0,
        "prompt": "a lighthouse at dusk, oil painting",
    }
    return result


def _positive(x: Any) -> bool:
    return isinstance(x, float | int) and math.isfinite(x) and x > 0


def _check_bare(result: dict[str, Any], modes: list[str]) -> None:
    configs = {(c["mode"], c["batch"]): c for c in result["bare"]}
    assert set(configs) == {(mode, batch) for mode in modes for batch in (1, 2)}
    for config in configs.values():
        assert len(config["call_seconds"]) == 1 and all(map(_positive, config["call_seconds"]))
        assert config["seconds_per_image"] == config["call_seconds"][0] / config["batch"]
        assert config["peak_bytes"] is None  # CUDA only
    assert set(result["batch_gain"]) == set(modes) and all(map(_positive, result["batch_gain"].values()))


def test_the_sdxl_architecture_has_the_real_sizes_on_meta() -> None:
    pipe = build_pipeline("sdxl", "meta", "float16")
    parts = ("unet", "vae", "text_encoder", "text_encoder_2")
    assert param_counts(pipe) == {name: PARAMS[name] for name in parts}
    for name in parts:  # built in the target dtype on the target device, not cast afterwards
        floats = [p for p in getattr(pipe, name).parameters() if p.is_floating_point()]
        assert {(p.device.type, p.dtype) for p in floats} == {("meta", torch.float16)}


def test_compiled_on_cpu(tmp_path: Path) -> None:
    result = _run(tmp_path, "--no-service")
    _check_bare(result, ["eager", "compiled"])
    compiled = result["compile"]
    assert compiled["graphs"]["unet"] > 0
    assert compiled["graphs_after_timed"] == compiled["graphs"]  # nothing compiled while timing
    assert compiled["graphs"]["vae_decoder"] == 0  # not on CPU, as in the service (app/engine/gpu/compiled.py)
    assert _positive(compiled["backend_seconds"])
    first = compiled["first_call_seconds"]
    assert set(first) == {"1", "2"} and all(map(_positive, first.values()))
    assert result["service"] is None
    assert result["meta"]["params"]["unet"] > 0


def test_service_ratios_on_cpu(tmp_path: Path) -> None:
    result = _run(tmp_path, "--no-compile")
    _check_bare(result, ["eager"])
    assert result["compile"] is None
    service = result["service"]
    assert service["compiled"] is False and _positive(service["ready_seconds"])
    single, clients = service["single"], service["clients"]
    assert single["samples"] == 1 and _positive(single["e2e_ms"]) and _positive(single["bare_ms"])
    assert single["ratio"] == single["e2e_ms"] / single["bare_ms"]
    assert _positive(single["stages_ms"]["inference_ms"])
    assert clients["clients"] == 2 and clients["images"] == 2 and 1 <= clients["mean_batch"] <= 2
    assert clients["bare_seconds_per_image"] == next(c for c in result["bare"] if c["batch"] == 2)["seconds_per_image"]
    assert _positive(clients["ratio"]) and _positive(clients["seconds_per_image"])
    assert (tmp_path / "server-full-size-cpu.log").read_text().count("loaded model 'bench'") == 1
