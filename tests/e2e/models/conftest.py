"""A server with a registry of three tiny models (the two built-ins plus one from a models file) and a broken
entry, so that switching, eviction, the CPU tier and a failed load can be watched through the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.engine.models.tiny.build import ensure_tiny_models
from tests.conftest import LiveServer, start_server, tiny_settings


def models_file(model_cache: Path, directory: Path) -> Path:
    paths = ensure_tiny_models(model_cache)
    spec = {
        "models": {
            # Another name for tiny-b's weights: a third model to switch to, loaded from a plain directory.
            "tiny-c": {"source": str(paths.base_b), "family": "tiny", "steps": 3, "description": "from a file"},
            "broken": {"source": str(directory / "no-such-model"), "family": "tiny"},
            # The default model's weights with another VAE swapped in at load time (a per-model VAE).
            "tiny-with-vae-b": {"source": str(paths.base), "family": "tiny", "vae": "tiny-vae-b"},
        }
    }
    path = directory / "models.json"
    path.write_text(json.dumps(spec))
    return path


def registry_server(model_cache: Path, directory: Path, **overrides: Any) -> LiveServer:
    settings = tiny_settings(
        model_cache,
        directory / "images",
        models_file=models_file(model_cache, directory),
        watermark=False,
        **overrides,
    )
    return start_server(settings)


@pytest.fixture(scope="module")
def tiered(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Two models on the device (the pinned default included), one more kept in the CPU tier."""
    live = registry_server(model_cache, tmp_path_factory.mktemp("tiered"), model_cache_max_models=2, model_cpu_tier=1)
    yield live
    live.stop()
