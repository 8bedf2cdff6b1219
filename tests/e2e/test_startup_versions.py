"""A later day, reproduced: installed packages that drifted from the lock, seen through a real `serve` process.

Drift is injected the way it happens: another version's metadata is found first on the path (a folder on
PYTHONPATH holding only a `*.dist-info`), so every version check, ours and the libraries' own, sees it. The
modules themselves are untouched, which keeps the rest of the process honest.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from app.engine import versions
from tests.conftest import free_port
from tests.helpers import wait_ready

ROOT = Path(__file__).resolve().parents[2]


def _shadow(folder: Path, name: str, fake_version: str) -> None:
    info = folder / f"{name}-{fake_version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {fake_version}\n")


def _serve(tmp_path: Path, shadows: Path, cache: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(shadows),
        "SDXL_MODEL": "tiny",
        "SDXL_CACHE_DIR": str(cache),
        "IMAGE_DIR": str(tmp_path / "images"),
        "SDXL_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def test_a_known_incompatible_pair_stops_startup_with_both_names(tmp_path: Path, model_cache: Path) -> None:
    """transformers' PEFT integration has a minimum no resolver sees; below it startup names both packages."""
    from transformers.integrations.peft import MIN_PEFT_VERSION

    minimum = tuple(int(p) for p in MIN_PEFT_VERSION.split(".")[:2])
    old_peft = f"{minimum[0]}.{minimum[1] - 1}.0" if minimum[1] else f"{minimum[0] - 1}.99.0"
    _shadow(tmp_path / "shadow", "peft", old_peft)
    proc, _ = _serve(tmp_path, tmp_path / "shadow", model_cache)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    lines = [line for line in out.splitlines() if "startup failed" in line]
    assert len(lines) == 1, out
    line = lines[0]
    expected = f"transformers {version('transformers')} needs peft >= {MIN_PEFT_VERSION}, but peft {old_peft} is"
    assert expected in line
    assert "lock/runtime-cuda.txt" in line and "make install" in line, "the fix is named"
    assert "registry" not in line and "Traceback" not in out


def test_a_library_that_refuses_to_import_stops_startup_naming_the_drift(tmp_path: Path, model_cache: Path) -> None:
    """transformers checks its own dependencies when imported; a tokenizers outside its range makes the import
    raise. Startup must end (exit 1, one line naming the package), not hang at /ready 503 with nothing logged."""
    _shadow(tmp_path / "shadow", "tokenizers", "0.0.1")
    proc, _ = _serve(tmp_path, tmp_path / "shadow", model_cache)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    lines = [line for line in out.splitlines() if "startup failed" in line]
    assert len(lines) == 1, out
    assert "do not import" in lines[0] and "tokenizers" in lines[0], lines[0]
    assert "tokenizers 0.0.1 (lock: " in lines[0] and "lock/runtime-cuda.txt" in lines[0]
    assert "Traceback" not in out


def test_without_our_check_the_same_drift_breaks_the_tiny_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above is not hypothetical: with that peft, transformers itself refuses the tiny LoRA build,
    and the load error then blames the installed packages, not the network."""
    from app.config import Settings
    from app.engine.gpu import loader
    from app.engine.models.registry import build_registry
    from app.errors import ModelLoadError

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0.1" if name == "peft" else real(name))
    settings = Settings(model="tiny", cache_dir=tmp_path / "fresh-cache")
    entry = build_registry(settings).models["tiny"]
    with pytest.raises(ModelLoadError) as caught:
        loader.load_model(entry, settings, loader.resolve_placement(settings))
    message = caught.value.message
    # diffusers (0.17.0) or transformers (MIN_PEFT_VERSION) refuses first; either names the minimum, in the
    # operator's text (the caller gets the kind of error and the hint).
    assert re.search(r"PEFT .*(>=|at least) \d+\.\d+", caught.value.for_operator), caught.value.for_operator
    assert "installed packages" in message and "lock" in message
    assert "network" not in message and "SDXL_MODEL=tiny" not in message


def test_drift_from_the_lock_is_named_once_and_the_start_is_quiet(tmp_path: Path) -> None:
    """A package at another version than the lock: the server still starts (an operator may upgrade on purpose)
    and says which package drifted. The same start, building the tiny models from nothing, logs one line per model
    load and none of the libraries' progress bars or torchvision notices."""
    lock = versions.runtime_lock()
    assert lock is not None
    locked = versions.read_lock(lock)["aiofiles"]
    _shadow(tmp_path / "shadow", "aiofiles", "0.1.0")
    proc, url = _serve(tmp_path, tmp_path / "shadow", tmp_path / "fresh-cache")
    try:
        wait_ready(url, proc, timeout=180)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    drift = [line for line in out.splitlines() if f"differ from lock/{lock.name}" in line]
    assert len(drift) == 1, out
    assert f"aiofiles 0.1.0 (lock: {locked})" in drift[0] and "WARNING" in drift[0]
    assert [line for line in out.splitlines() if "loaded model 'tiny'" in line], out
    assert sum("loaded " in line for line in out.splitlines()) == 1, out
    for noise in ("Writing model shards", "Loading weights", "Loading pipeline components", "torchvision", "it/s]"):
        assert noise not in out, f"{noise!r} in the startup log:\n{out}"
