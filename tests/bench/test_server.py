"""bench/server.py: a benchmark killed outright takes its server (and the server's encode workers) with it."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

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
    tree: list[psutil.Process] = []
    try:
        assert parent.stdout is not None
        server = psutil.Process(int(parent.stdout.readline()))  # printed once the server is ready
        tree = [server, *server.children(recursive=True)]
        assert any("forkserver" in " ".join(p.cmdline()) for p in tree), [p.cmdline() for p in tree]
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        killed = time.monotonic()
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert not alive, [(p.pid, p.cmdline()) for p in alive]
        print(f"{len(tree)} processes, all gone {time.monotonic() - killed:.2f}s after the benchmark's kill")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(30)
        for p in tree:  # what a failure above leaves behind: not for the next test or run
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
