"""kill -9: every image answered before the kill survives a restart, and no partial write remains; every job
accepted before the kill ends (failed, `replica_lost`) once the killed process's lease has lapsed; and the killed
process's encoding workers and their forkserver do not outlive it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.conftest import free_port
from tests.helpers import ASYNC, SLOW, decode, kill_and_await, reaped, serve_env, wait_for, wait_ready

CLIENTS = 3
TERMINAL = {"succeeded", "failed", "cancelled"}
LEASE_S = 2


def _serve(model_cache: Path, tmp_path: Path, port: int, **env: str) -> subprocess.Popen[Any]:
    return subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=serve_env(model_cache, tmp_path, SDXL_MODEL="tiny", **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_sigkill_during_writes_loses_no_answered_image(model_cache: Path, tmp_path: Path) -> None:
    image_dir = tmp_path / "images"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(model_cache, tmp_path, port)
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def generate_forever(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            for i in range(10_000):
                if stop.is_set():
                    return
                try:
                    r = c.post("/generate", json={"prompt": "crash", "seed": worker * 10_000 + i, "width": 256})
                except httpx.TransportError:
                    return  # the server died under us
                if r.status_code == 200:
                    with lock:
                        answered.append(r.json()["id"])

    threads = [threading.Thread(target=generate_forever, args=(w,), daemon=True) for w in range(CLIENTS)]
    try:
        wait_ready(url, proc)
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while len(answered) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(answered) >= 6, "the server answered too few requests to test anything"
        proc.send_signal(signal.SIGKILL)  # with CLIENTS requests in flight, one of them mid-write
        proc.wait(30)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        for t in threads:
            t.join(60)
    with lock:
        before_kill = list(answered)
    # What a crash in the middle of os.replace's preparation leaves behind; the restart must sweep it.
    (image_dir / ".tmp-left-by-crash").write_bytes(b"\x89PNG partial")

    proc = _serve(model_cache, tmp_path, port := free_port())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        with httpx.Client(base_url=url, timeout=60) as c:
            for image_id in before_kill:
                r = c.get(f"/download/{image_id}")
                assert r.status_code == 200, (image_id, r.text)
                assert decode(r.content).format == "PNG"
        assert not list(image_dir.rglob(".tmp-*"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def test_jobs_of_a_killed_server_end_failed_once_its_lease_lapses(model_cache: Path, tmp_path: Path) -> None:
    """Two servers on one image dir and host, so with one replica id (what a restart on the same host is): B
    answers for A's jobs while A runs them, and once A is killed they end there within about A's lease."""
    # A short lease, not so short that a loaded machine's stalls make A take a new instance (heartbeat.py).
    env = {"SDXL_REPLICA_LEASE_S": str(LEASE_S), "SDXL_MAX_BATCH": "1"}  # one job runs, the others wait
    a_port, b_port = free_port(), free_port()
    a, b = (_serve(model_cache, tmp_path, port, **env) for port in (a_port, b_port))  # both load at once
    a_url, b_url = f"http://127.0.0.1:{a_port}", f"http://127.0.0.1:{b_port}"
    events: list[dict[str, Any]] = []
    try:
        wait_ready(a_url, a)
        wait_ready(b_url, b)
        with httpx.Client(base_url=a_url, timeout=30) as c:
            accepted = [c.post("/generate", json=SLOW, headers=ASYNC).json()["id"] for _ in range(4)]
            wait_for(c, accepted[0], {"running"})
        with httpx.Client(base_url=b_url, timeout=30) as c:
            seen = [c.get(f"/jobs/{job_id}").json() for job_id in accepted]
            assert [j["status"] for j in seen] == ["queued"] * 4, seen  # records say queued until a job ends
            assert all(j["replica"]["alive"] for j in seen), seen  # A renews its lease: nothing to settle yet
            assert len({j["replica"]["instance"] for j in seen}) == 1

            def follow() -> None:
                with httpx.stream("GET", f"{b_url}/jobs/{accepted[2]}/events", timeout=30) as stream:
                    events.extend(json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: "))

            follower = threading.Thread(target=follow, daemon=True)
            follower.start()
            a.send_signal(signal.SIGKILL)
            a.wait(30)
            killed = time.monotonic()
            ended = {job_id: wait_for(c, job_id, TERMINAL, timeout=20) for job_id in accepted}
            lag = time.monotonic() - killed
            assert lag < LEASE_S + 2 + 3, lag  # the lease, the clock-skew margin, slack for a loaded machine
            print(f"accepted {len(accepted)}, ended {len(ended)}, {lag:.1f}s after the kill")
            for job in ended.values():
                assert job["status"] == "failed" and job["error"]["type"] == "replica_lost", job
                assert "resubmit" in job["error"]["message"] and job["replica"]["alive"] is False, job
            cancelled = c.delete(f"/jobs/{accepted[1]}")  # nothing left to cancel: answered as it ended
            assert cancelled.status_code == 200 and cancelled.json() == ended[accepted[1]], cancelled.text
            follower.join(20)
            assert not follower.is_alive(), "the stream on the lost job did not end"
            assert [e["status"] for e in events] == ["queued", "failed"], events
            assert events[-1]["error"]["type"] == "replica_lost"
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (a, b):
            proc.wait(60)


def test_the_encoding_workers_of_a_killed_server_exit_with_it(model_cache: Path, tmp_path: Path) -> None:
    """What the OOM killer does: SIGKILL, no shutdown. A pool's workers never notice on their own (each holds its
    queue's write end, so its read never ends) and would keep their forkserver, the resource tracker and their
    memory for good, one more set at each restart."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(model_cache, tmp_path, port)
    with reaped(proc) as tree:
        wait_ready(url, proc)
        with httpx.Client(base_url=url, timeout=60) as c:  # an image through the workers, as in service
            assert c.post("/generate", json={"prompt": "x", "seed": 1, "width": 256}).status_code == 200
        tree.extend(psutil.Process(proc.pid).children(recursive=True))
        forked = [p for p in tree if "forkserver" in " ".join(p.cmdline())]
        assert len(forked) >= 3, [p.cmdline() for p in tree]  # the forkserver and its 2 or more workers
        seconds = kill_and_await(proc, tree, timeout_s=10)
        print(f"{len(tree)} processes under the server, all gone {seconds:.2f}s after the kill")
