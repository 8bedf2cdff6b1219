"""The README's run command as a real subprocess: it serves, it refuses unsafe exposure, it fails clearly."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.helpers import serve_env, wait_ready


def test_serve_answers_ready_and_generate(model_cache: Path, tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=serve_env(model_cache, tmp_path, SDXL_MODEL="tiny"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        r = httpx.post(f"{url}/generate", json={"prompt": "hello", "seed": 1}, timeout=60)
        assert r.status_code == 200, r.text
        assert httpx.get(f"{url}/download/{r.json()['id']}").status_code == 200
        assert (tmp_path / "images" / f"{r.json()['id']}.png").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()
    log = out.decode()
    assert "serving WITHOUT auth, on loopback 127.0.0.1 only" in log
    assert "POST /generate 200" in log


def test_unloadable_model_fails_with_one_clear_line(model_cache: Path, tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=serve_env(model_cache, tmp_path, SDXL_MODEL="no-such-org/no-such-sdxl"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, proc.stderr
    assert "no-such-org/no-such-sdxl" in errors[0] and "SDXL_MODEL=tiny" in errors[0]
    assert "Traceback" not in proc.stderr


def test_malformed_models_file_fails_with_one_clear_line(model_cache: Path, tmp_path: Path) -> None:
    models = tmp_path / "models.json"
    models.write_text('{"models": {"x": {"steps": 3}}}')
    proc = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", str(free_port())],
        env=serve_env(model_cache, tmp_path, SDXL_MODEL="tiny", SDXL_MODELS_FILE=str(models)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "needs a 'source'" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_refuses_open_non_loopback_bind(model_cache: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env=serve_env(model_cache, tmp_path, SDXL_MODEL="tiny"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0 without GENERATION_AUTH_KEY" in proc.stderr


@pytest.mark.parametrize("key", [",", " , ", ""])
def test_a_set_key_that_holds_no_key_fails_closed(model_cache: Path, tmp_path: Path, key: str) -> None:
    """GENERATION_AUTH_KEY="," once turned auth off while the log said no key was set: now it stops the start."""
    proc = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", str(free_port())],
        env=serve_env(model_cache, tmp_path, SDXL_MODEL="tiny", GENERATION_AUTH_KEY=key),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "GENERATION_AUTH_KEY is set but holds no key" in proc.stderr


def test_help_is_fast_and_does_not_import_torch() -> None:
    code = "import sys; from app.__main__ import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
