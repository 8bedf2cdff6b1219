"""The registry: built-ins, SDXL_MODELS_FILE (JSON or TOML), SDXL_LORA_DIR, and lookups that teach the choices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.config import SDXL_BASE, SDXL_REFINER, Settings
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
        '[controlnets.canny-sdxl]\nsource = "/mirror/canny"\n'
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
        {"models": {"x": {"source": "a", "variant": "../fp16"}}},  # part of a file name: a name, never a path
        {"models": {"x": {"source": "a", "variant": 16}}},
        {"models": {"x": {"source": "a", "variants": "fp16"}}},  # unknown keys are still refused
        {"vaes": {"v": {"source": "org/vae", "varient": "fp16"}}},
    ],
)
def test_malformed_models_files_are_refused(tmp_path: Path, spec: object) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(ValueError):
        build_registry(_settings(tmp_path, models_file=path))


def test_builtin_variants_match_the_hub_repos(tmp_path: Path) -> None:
    """fp16 files where the repos publish them; none for the fp16-fix VAE, Animagine and the tiny models."""
    registry = build_registry(Settings(model="sdxl-base"))
    variants = {name: entry.variant for name, entry in registry.models.items()}
    assert variants == {
        "sdxl-base": "fp16",
        "sdxl-turbo": "fp16",
        "sdxl-anime": None,
        "sdxl-anime-legacy": None,
        "tiny": None,
        "tiny-b": None,
    }
    assert {n: e.variant for n, e in registry.vaes.items()} == {"sdxl-vae-fp16-fix": None, "tiny-vae-b": None}
    assert {n: e.variant for n, e in registry.controlnets.items()} == {
        "canny-sdxl": "fp16",
        "depth-sdxl": "fp16",
        "tiny-controlnet": None,
    }
    # A setting, not an entry a request names: the SDXL refiner has fp16 files; others are not assumed to.
    assert (registry.refiner.source, registry.refiner.variant) == (SDXL_REFINER, "fp16")
    assert "refiner" not in registry.models and SDXL_REFINER not in registry.models
    tiny = build_registry(_settings(tmp_path)).refiner
    assert (tiny.name, tiny.source, tiny.variant) == ("tiny", "tiny:refiner", None)
    other = build_registry(Settings(model="sdxl-base", refiner_model="/models/my-refiner")).refiner
    assert (other.source, other.variant) == ("/models/my-refiner", None)


def test_models_file_variant_key(tmp_path: Path) -> None:
    spec = {
        "models": {
            "mine": {"source": "org/mine", "variant": "fp16"},
            "plain": {"source": "/models/plain"},
            "sdxl-base": {"variant": "none"},  # a built-in without its variant (e.g. a mirror with fp32 files only)
            "sdxl-turbo": {"description": "only the description"},  # keeps its own variant
        },
        "vaes": {"my-vae": {"source": "org/vae", "variant": "fp16"}},
        "controlnets": {
            "pose": {"source": "org/pose", "variant": None},
            "canny-sdxl": {"source": "/mirror/canny"},  # an override keeps the built-in's variant
        },
    }
    (tmp_path / "m.json").write_text(json.dumps(spec))
    (tmp_path / "m.toml").write_text(
        '[models.mine]\nsource = "org/mine"\nvariant = "fp16"\n[models.plain]\nsource = "/models/plain"\n'
        '[models.sdxl-base]\nvariant = "none"\n[models.sdxl-turbo]\ndescription = "only the description"\n'
        '[vaes.my-vae]\nsource = "org/vae"\nvariant = "fp16"\n[controlnets.pose]\nsource = "org/pose"\n'
        '[controlnets.canny-sdxl]\nsource = "/mirror/canny"\n'
    )
    for name in ("m.json", "m.toml"):
        registry = build_registry(_settings(tmp_path, models_file=tmp_path / name))
        models = registry.models
        assert (models["mine"].variant, models["plain"].variant) == ("fp16", None)
        assert (models["sdxl-base"].variant, models["sdxl-turbo"].variant) == (None, "fp16")
        assert models["sdxl-base"].source == SDXL_BASE
        assert registry.vaes["my-vae"].variant == "fp16" and registry.controlnets["pose"].variant is None
        assert registry.controlnets["canny-sdxl"].variant == "fp16"
        assert registry.controlnets["canny-sdxl"].source == "/mirror/canny"


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
