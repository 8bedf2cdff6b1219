"""The client commands (`sdxl-serve generate | refine | download | models`) as real subprocesses against a real
server: files written, exit statuses, one-line errors on stderr, --help."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.__main__ import main
from app.client import Client
from tests.conftest import LiveServer, free_port, start_server, tiny_settings
from tests.helpers import decode

KEY = "cli-test-key"


@pytest.fixture(scope="module")
def keyed(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tiny_settings(model_cache, tmp_path_factory.mktemp("images"), generation_auth_key=KEY))
    yield live
    live.stop()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDXL_") and k != "GENERATION_AUTH_KEY"}
    env.update(extra)
    return env


def cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], capture_output=True, cwd=cwd, env=_env(**env), timeout=120
    )


def one_error_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sdxl-serve: error: "), proc.stderr
    return lines[0]


def test_generate_writes_pngs_and_prints_their_ids(keyed: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "fox.png"
    proc = cli(
        "generate", "a red fox", *f"--seed 5 --steps 2 -n 2 -o {out}".split(), SDXL_URL=keyed.url, SDXL_API_KEY=KEY
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""  # no bar: stderr is not a terminal
    lines = proc.stdout.decode().splitlines()
    assert [line.split()[0] for line in lines] == [str(tmp_path / "fox-0.png"), str(tmp_path / "fox-1.png")]
    assert [line.split()[2] for line in lines] == ["seed=5", "seed=6"]
    with Client(keyed.url, api_key=KEY) as sdxl:
        for i, line in enumerate(lines):
            image_id = line.split()[1].removeprefix("id=")
            png = (tmp_path / f"fox-{i}.png").read_bytes()
            assert decode(png).size == (256, 256) and png == sdxl.download(image_id)


def test_generate_into_a_new_directory_with_the_servers_key_variable(keyed: LiveServer, tmp_path: Path) -> None:
    # GENERATION_AUTH_KEY (the server's own variable, possibly a list) works when SDXL_API_KEY is not set.
    folder = tmp_path / "boats"
    args = f"generate boat --steps 2 -q -o {folder}/ --url {keyed.url}".split()
    proc = cli(*args, GENERATION_AUTH_KEY=f"{KEY},other")
    assert proc.returncode == 0, proc.stderr
    (written,) = folder.glob("*.png")
    assert proc.stdout.decode().startswith(str(written)) and len(written.stem) == 32


def test_progress_bar_on_a_terminal(keyed: LiveServer, tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    # A new pty is 0 columns wide, and tqdm fits its bar into 0 columns: give it a terminal's size.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "app", "generate", "x", "--steps", "3", "--url", keyed.url, "--api-key", KEY],
            stdout=subprocess.PIPE,
            stderr=follower,
            cwd=tmp_path,
            env=_env(),
            timeout=120,
        )
        os.close(follower)
        follower = -1
        bar = b""
        while chunk := _read(leader):
            bar += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0
    assert b"3/3" in bar and b"step" in bar, bar


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the other side is closed
        return b""


def test_download_and_refine(keyed: LiveServer, tmp_path: Path) -> None:
    with Client(keyed.url, api_key=KEY) as sdxl:
        image = sdxl.generate("a lighthouse", seed=9, num_inference_steps=2)
        stored = sdxl.download(image.id)
    opts = ("--url", keyed.url, "--api-key", KEY)

    proc = cli("download", image.id, *opts, cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / f"{image.id}.png").read_bytes() == stored
    proc = cli("download", image.id, "-o", "-", *opts)
    assert proc.returncode == 0 and proc.stdout == stored

    out = tmp_path / "r.png"
    proc = cli("refine", image.id, "a lighthouse, detailed", *f"--strength 0.5 --steps 4 -o {out}".split(), *opts)
    assert proc.returncode == 0, proc.stderr
    refined_id = proc.stdout.decode().split()[1].removeprefix("id=")
    refined = out.read_bytes()
    assert refined_id != image.id and decode(refined).size == (256, 256)
    with Client(keyed.url, api_key=KEY) as sdxl:
        assert sdxl.download(refined_id) == refined


def test_exit_statuses_and_one_line_errors(keyed: LiveServer, tmp_path: Path) -> None:
    proc = cli("generate", "x", "--url", keyed.url, "--api-key", "wrong", cwd=tmp_path)
    assert proc.returncode == 4
    assert "missing or invalid API key" in one_error_line(proc) and "401" in one_error_line(proc)

    proc = cli("generate", "x", "--url", f"http://127.0.0.1:{free_port()}", "--retries", "0")
    assert proc.returncode == 3
    assert "could not connect to http://127.0.0.1:" in one_error_line(proc)

    proc = cli("generate", "x", "--width", "260", "--url", keyed.url, "--api-key", KEY, cwd=tmp_path)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "multiple of 8" in line and "[field: width]" in line and "422" in line

    assert not list(tmp_path.iterdir())  # nothing written by a failed command


def test_more_exit_statuses_in_process(keyed: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["download", "0" * 32, "--url", keyed.url, "--api-key", KEY]) == 1
    assert main(["models", "--url", "localhost:8000"]) == 2
    first, second = capsys.readouterr().err.splitlines()
    assert first.startswith("sdxl-serve: error: ") and "404" in first
    assert second.startswith("sdxl-serve: error: ") and "http://" in second


@pytest.mark.parametrize("command", ["generate", "refine", "download", "models", "serve"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: sdxl-serve {command}")
    if command != "serve":
        assert "examples:" in text and "exit status:" in text and "--api-key" in text
        assert "130  interrupted (Ctrl-C)" in text
    if command == "refine":  # refine has no -n, so its -o help does not mention one
        assert not re.search(r"-n\b", text) and "--num-images" not in text


def test_ctrl_c_cancels_the_job_and_exits_130(keyed: LiveServer, tmp_path: Path) -> None:
    slow = ["generate", "slow", "--width", "512", "--height", "512", "--steps", "40", "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", *slow, "--url", keyed.url, "--api-key", KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 60
        with keyed.client(headers={"X-API-Key": KEY}) as c:
            while not keyed.service.active() and time.monotonic() < deadline:  # submitted: now following it
                time.sleep(0.05)
            assert keyed.service.active(), "the job never arrived"
            job_id = keyed.service.active()[0]["id"]
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 130, err
            assert err.decode().splitlines() == ["sdxl-serve: error: interrupted"], err
            job = c.get(f"/jobs/{job_id}").json()
            while job["status"] not in ("cancelled", "succeeded", "failed") and time.monotonic() < deadline:
                time.sleep(0.05)
                job = c.get(f"/jobs/{job_id}").json()
            assert job["status"] == "cancelled", job
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_client_and_cli_do_not_import_the_server_stack() -> None:
    code = (
        "import sys, app.__main__, app.client, app.cli.images, app.cli.models; "
        "print(sorted(m for m in ('torch', 'diffusers', 'fastapi', 'uvicorn', 'starlette') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_models_table(keyed: LiveServer) -> None:
    proc = cli("models", "--url", keyed.url, "--api-key", KEY)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert lines[0].split() == ["NAME", "LOADED", "WHERE", "SIZE", "DEFAULTS", "HITS/MISSES", "SOURCE"]
    assert any(line.startswith("tiny *") for line in lines) and any(line.startswith("schedulers: ") for line in lines)
    proc = cli("models", "--json", "--url", keyed.url, "--api-key", KEY)
    assert proc.returncode == 0 and '"default": "tiny"' in proc.stdout.decode()
