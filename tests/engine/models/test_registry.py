"""The registry: built-ins, SDXL_MODELS_FILE (JSON or TOML), SDXL_LORA_DIR, and lookups that teach the choices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.config import Settings
from app.engine.models.registry import TINY_DEFAULTS, build_registry
from app.errors import InvalidRequest


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(model="tiny", cache_dir=tmp_path, image_dir=tmp_path / "images", **overrides)  # type: ignore[arg-type]


def test_builtins_and_default(tmp_path: Path) -> None:
    registry = build_registry(_settings(tmp_path))
    assert registry.default == "tiny"
    assert registry.models["sdxl-turbo"].defaults.max_steps == 4
    assert registry.model(None).name == "tiny" and registry.model("tiny-b").defaults == TINY_DEFAULTS
    with pytest.raises(InvalidRequest, match="choose one of") as caught:
        registry.model("sdxl-nope")
    assert caught.value.field == "model"


def test_sdxl_model_as_hub_id_or_directory(tmp_path: Path) -> None:
    hub = build_registry(Settings(model="stabilityai/stable-diffusion-xl-base-1.0"))
    assert hub.default == "sdxl-base"  # a built-in's own source names that built-in
    local = build_registry(Settings(model="/models/my-sdxl"))  # a request may not name a path: "default"
    assert local.default == "default" and local.models["default"].source == "/models/my-sdxl"
    other = build_registry(Settings(model="someone/their-sdxl"))
    assert other.default == "someone/their-sdxl"


def test_models_file_json_and_toml(tmp_path: Path) -> None:
    spec = {
        "models": {
            "mine": {"source": "/models/mine", "steps": 12, "guidance": 3.5, "scheduler": "DDIM", "vae": "my-vae"},
            "sdxl-turbo": {"description": "overridden", "max_steps": 2},
        },
        "vaes": {"my-vae": {"source": "org/vae"}},
        "controlnets": {"pose": {"source": "org/pose"}},
    }
    (tmp_path / "m.json").write_text(json.dumps(spec))
    (tmp_path / "m.toml").write_text(
        '[models.mine]\nsource = "/models/mine"\nsteps = 12\nguidance = 3.5\nscheduler = "ddim"\nvae = "my-vae"\n'
        '[models.sdxl-turbo]\ndescription = "overridden"\nmax_steps = 2\n'
        '[vaes.my-vae]\nsource = "org/vae"\n[controlnets.pose]\nsource = "org/pose"\n'
    )
    for name in ("m.json", "m.toml"):
        registry = build_registry(_settings(tmp_path, models_file=tmp_path / name))
        mine = registry.models["mine"]
        assert (mine.source, mine.defaults.steps, mine.defaults.guidance, mine.vae) == (
            "/models/mine",
            12,
            3.5,
            "my-vae",
        )
        assert mine.defaults.scheduler == "ddim"
        assert mine.defaults.size == 1024  # unspecified: SDXL's
        turbo = registry.models["sdxl-turbo"]
        assert turbo.description == "overridden" and turbo.defaults.max_steps == 2 and turbo.defaults.size == 512
        assert registry.vae("my-vae", mine).source == "org/vae"
        assert registry.controlnet("pose", mine).source == "org/pose"


@pytest.mark.parametrize(
    "spec",
    [
        {"models": {"x": {"steps": 3}}},  # no source
        {"models": {"x": {"source": "a", "colour": "red"}}},  # unknown key
        {"models": {"../x": {"source": "a"}}},  # a name that is not a name
        {"models": {"x": {"source": "a", "family": "sd15"}}},
        {"models": []},
        {"model": {}},
        {"vaes": {"v": {"source": ""}}},
        {"models": {"x": {"source": "a", "scheduler": "plms"}}},  # references are checked at startup
        {"models": {"x": {"source": "a", "max_steps": "4"}}},
        {"models": {"x": {"source": "a", "vae": "nope"}}},
        {"models": {"x": {"source": "a", "vae": "tiny-vae-b"}}},  # another family's VAE
    ],
)
def test_malformed_models_files_are_refused(tmp_path: Path, spec: object) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(ValueError):
        build_registry(_settings(tmp_path, models_file=path))


def test_lora_dir_names_files_by_stem_only(tmp_path: Path) -> None:
    loras = tmp_path / "loras"
    loras.mkdir()
    for name in ("style.safetensors", "v1.2-detail.safetensors", "notes.txt", "bad name.safetensors"):
        (loras / name).write_bytes(b"x")
    (loras / "dir.safetensors").mkdir()
    registry = build_registry(_settings(tmp_path, lora_dir=loras))
    assert {"style", "v1.2-detail", "tiny-lora"} == set(registry.loras)
    tiny = registry.model("tiny")
    assert registry.lora("style", tiny, "loras[0].name").weight_name == "style.safetensors"  # any family
    with pytest.raises(InvalidRequest, match="does not fit"):
        registry.lora("tiny-lora", registry.model("sdxl-base"), "loras[0].name")
