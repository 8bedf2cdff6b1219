"""/models' `location` for a model that is not loaded: on disk, not downloaded, not built or missing (issue 15)."""

from __future__ import annotations

from pathlib import Path

from app.cli.models import table
from app.client import ModelsResponse
from app.config import Settings
from app.engine.models.local_files import where_on_disk
from app.engine.models.tiny.build import TINY_VERSION

REPO = "example-org/some-sdxl"


def _snapshot(hub: Path, revision: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """The hub cache's own layout: models--org--name/{refs/main, snapshots/<revision>/...}."""
    repo = hub / f"models--{REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    return snapshot


def test_a_hub_model_is_on_disk_only_with_its_index_and_unet_weights(tmp_path: Path) -> None:
    settings = Settings(model="sdxl-base", cache_dir=tmp_path / "cache")
    hub = tmp_path / "hub"
    assert where_on_disk(REPO, settings, hub) == "not_downloaded"  # never fetched
    snapshot = _snapshot(hub)
    (snapshot / "model_index.json").write_text("{}")
    assert where_on_disk(REPO, settings, hub) == "not_downloaded"  # an interrupted download: no weights yet
    (snapshot / "unet").mkdir()
    (snapshot / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"x")
    assert where_on_disk(REPO, settings, hub) == "disk"


def test_directories_and_tiny_models(tmp_path: Path) -> None:
    settings = Settings(model="sdxl-base", cache_dir=tmp_path / "cache")
    assert where_on_disk(str(tmp_path), settings) == "disk"
    assert where_on_disk(str(tmp_path / "nope"), settings) == "missing"
    assert where_on_disk("tiny:base", settings) == "not_built"
    root = tmp_path / "cache" / TINY_VERSION
    root.mkdir(parents=True)
    (root / "complete.json").write_text(f'{{"format": "{TINY_VERSION}"}}')
    assert where_on_disk("tiny:base", settings) == "disk"


def test_the_cli_table_says_not_downloaded(tmp_path: Path) -> None:
    defaults = {"width": 1024, "height": 1024, "num_inference_steps": 30, "guidance_scale": 5.0, "scheduler": None}
    model = {
        "name": "sdxl-base",
        "source": REPO,
        "description": "",
        "family": "sdxl",
        "pinned": False,
        "loaded": False,
        "location": "not_downloaded",
        "bytes": None,
        "hits": 0,
        "misses": 0,
        "loads": 0,
        "last_used": None,
        "defaults": {**defaults, "max_steps": 100},
    }
    listing = ModelsResponse.model_validate(
        {"default": "tiny", "device": "cpu", "models": [model], "loras": [], "vaes": [], "controlnets": []}
        | {"schedulers": [], "budget": {}, "memory": {}}
    )
    row = table(listing).splitlines()[1]
    assert row.split()[:4] == ["sdxl-base", "no", "not", "downloaded"], row
