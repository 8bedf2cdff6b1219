"""The refiner's files are made local at startup, its weights load on first use from local files only; a
refiner that cannot be made local leaves the service serving generate, and /refine and ensemble requests are
refused with the reason and a Retry-After, without a load attempt, until the back-off ends."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
from diffusers import StableDiffusionXLImg2ImgPipeline

from app.engine.gpu import fetch, loader
from app.engine.gpu import model_cache as pipeline_cache
from tests.conftest import start_server, tiny_settings
from tests.helpers import assert_error

ENSEMBLE = {"prompt": "x", "num_inference_steps": 4, "refine": {"mode": "ensemble", "high_noise_frac": 0.5}}


def test_the_refiner_is_resolved_at_startup_and_loads_on_first_use_from_local_files(
    model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved: list[str] = []
    real_resolve = fetch.resolve_refiner

    def resolve(entry: Any, *a: Any) -> str:
        resolved.append(entry.name)
        return real_resolve(entry, *a)

    monkeypatch.setattr(fetch, "resolve_refiner", resolve)
    loads: list[dict[str, Any]] = []
    real_load = StableDiffusionXLImg2ImgPipeline.from_pretrained

    def spied(path: Any, **kw: Any) -> Any:
        loads.append(kw)
        return real_load(path, **kw)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(StableDiffusionXLImg2ImgPipeline, "from_pretrained", spied)
    live = start_server(tiny_settings(model_cache, tmp_path / "images", download_models=True))
    try:
        assert resolved == ["tiny"] and loads == [] and live.service.refiner_loads == 0  # files, not weights
        with live.client() as c:
            image_id = c.post("/generate", json={"prompt": "x", "seed": 1}).json()["id"]
            assert c.post("/refine", json={"id": image_id, "prompt": "y"}).status_code == 200
    finally:
        live.stop()
    # Local files only even where requests may download other models: the refiner was fetched at startup.
    assert [(kw["local_files_only"], kw["use_safetensors"]) for kw in loads] == [(True, True)]


def test_a_refiner_that_cannot_be_resolved_leaves_generate_serving_and_refine_refused(
    model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_resolve = fetch.resolve_refiner
    gone = str(tmp_path / "no-refiner-here")

    def missing(entry: Any, *args: Any) -> str:  # fault injection: the refiner's files are not on this machine
        return real_resolve(dataclasses.replace(entry, source=gone), *args)

    monkeypatch.setattr(fetch, "resolve_refiner", missing)
    attempts: list[int] = []
    real_load = loader.load_refiner

    def load(*a: Any, **kw: Any) -> Any:
        attempts.append(1)
        return real_load(*a, **kw)

    monkeypatch.setattr(loader, "load_refiner", load)
    with caplog.at_level(logging.WARNING, logger="app.engine.refiner"):
        live = start_server(tiny_settings(model_cache, tmp_path / "images"))
    try:
        with live.client() as c:
            assert c.get("/ready").status_code == 200
            generated = c.post("/generate", json={"prompt": "x", "seed": 1})
            assert generated.status_code == 200, generated.text
            image_id = generated.json()["id"]
            for _ in range(3):
                r = c.post("/refine", json={"id": image_id, "prompt": "y"})
                message = assert_error(r, 503, "model_load_failed")["message"]
                assert message.startswith("the refiner 'tiny' is not on this machine (FileNotFoundError);")
                assert "no directory" not in message  # the library's words (and paths) are for the log
                assert "(not retried for" in message and 1 <= int(r.headers["Retry-After"]) <= 60
            assert_error(c.post("/generate", json=ENSEMBLE), 503, "model_load_failed")
            assert attempts == [] and live.service.refiner_loads == 0  # refused on the event loop, at once
            warnings = [r.getMessage() for r in caplog.records if "refine unavailable" in r.getMessage()]
            assert len(warnings) == 1 and "the refiner 'tiny' is not on this machine" in warnings[0]
            assert "no directory" in warnings[0]
            # After the back-off a request tries a load again, from local files only (here they are present).
            monkeypatch.setattr(pipeline_cache, "FAILED_LOAD_TTL_S", 0.0)
            assert c.post("/refine", json={"id": image_id, "prompt": "y"}).status_code == 200
            assert c.post("/generate", json=ENSEMBLE).status_code == 200
            assert attempts == [1]
    finally:
        live.stop()
