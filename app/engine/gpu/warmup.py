"""The startup warm-up: one generate, one img2img and one refine at the default size, on the GPU owner's thread,
before /ready turns 200. It moves the first call's one-off costs (kernel selection, allocator growth) out of the
first user's request, and measures what the memory model only estimates: the peak device memory of those calls.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from app.engine.gpu import memory
from app.engine.gpu.runner import Runner
from app.engine.jobs.items import GenerateParams, RefineParams

logger = logging.getLogger(__name__)


def warm_up(runner: Runner, calls: list[list[GenerateParams] | list[RefineParams]]) -> dict[str, Any]:
    """Run each call; returns {"seconds", "peak_bytes" (CUDA only, else None), "calls"}."""
    import torch

    cuda = runner.placement.device.startswith("cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    done = []
    for items in calls:
        runner.run(items, lambda: None)
        done.append(items[0].kind if isinstance(items[0], GenerateParams) else "refine")
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    compiler = runner.compiler
    if compiler is not None:
        compiler.warmed = True  # from here on, a compile is one a request waits for
        logger.info("warm-up: torch.compile built %s graphs in %.1fs", compiler.graphs, compiler.seconds)
    peak = int(torch.cuda.max_memory_allocated()) if cuda else None
    budget = runner.memory.budget
    logger.info(
        "warm-up: %s in %.1fs; peak device memory %s%s",
        " + ".join(done),
        seconds,
        memory.gib(peak) if peak is not None else "not measured (not CUDA)",
        f" of a {memory.gib(budget)} budget" if budget is not None else "",
    )
    result: dict[str, Any] = {"seconds": round(seconds, 3), "peak_bytes": peak, "calls": done}
    if compiler is not None:
        result["compiled_graphs"] = dict(compiler.graphs)
    return result
