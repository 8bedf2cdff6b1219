"""bench/server.py: a benchmark killed outright takes its server (and the server's encode workers) with it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

from tests.helpers import kill_and_await, reaped

ROOT = Path(__file__).resolve().parents[2]


def test_a_killed_benchmark_leaves_no_server_behind(model_cache: Path, tmp_path: Path) -> None:
    """What `kill -9` of `python -m bench` does: no `finally` runs, so nothing calls stop(). Before the server
    watched its parent, it and its encode workers served on under init for good."""
    settings = {"model": "tiny", "cache_dir": str(model_cache), "image_dir": str(tmp_path / "images")}
    bench = textwrap.dedent(f"""
        import json, sys, time
        from pathlib import Path
        from bench.server import running
        with running("killed", Path({str(tmp_path)!r}), **json.loads({json.dumps(settings)!r})) as server:
            print(server.process.pid, flush=True)
            time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", bench], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    with reaped(parent) as tree:
        assert parent.stdout is not None
        server = psutil.Process(int(parent.stdout.readline()))  # printed once the server is ready
        tree.extend([server, *server.children(recursive=True)])
        assert any("forkserver" in " ".join(p.cmdline()) for p in tree), [p.cmdline() for p in tree]
        seconds = kill_and_await(parent, tree, timeout_s=30)
        print(f"{len(tree)} processes, all gone {seconds:.2f}s after the benchmark's kill")
