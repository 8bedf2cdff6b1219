"""node_info in IGI's shape: identity from settings, system stats collected off the loop and cached."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil
import pytest

from app.config import Settings
from app.events.node_info import NodeInfo


def test_identity_defaults_to_the_host_name_and_reads_salads_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert NodeInfo.from_settings(Settings(model="tiny", image_dir=tmp_path)).identity == {
        "node_id": socket.gethostname(),
        "node_group": None,
    }
    monkeypatch.setenv("SALAD_MACHINE_ID", "machine-1")
    monkeypatch.setenv("SALAD_CONTAINER_GROUP_ID", "group-1")
    identity = NodeInfo.from_settings(Settings(model="tiny", image_dir=tmp_path)).identity
    assert identity == {"node_id": "machine-1", "node_group": "group-1"}


def test_system_stats_have_igis_shape(tmp_path: Path) -> None:
    stats = NodeInfo("n", None, tmp_path / "not" / "yet" / "there").collect()  # S3 storage: no image dir
    assert len(stats["cpu"]["utilization"]) == psutil.cpu_count()
    assert all(set(f) == {"current", "min", "max"} for f in stats["cpu"]["frequency"])
    assert set(stats["memory"]) == {"total", "available", "percent", "used", "free"}
    assert set(stats["storage"]) == {"total", "used", "free"} and stats["storage"]["free"] > 0
    assert stats["gpu"] == []  # CPU-only test machine
    assert stats["packages"]["sdxl_serve"] == "0.1.0" and stats["packages"]["diffusers"]


async def test_snapshots_are_cached_for_a_second(tmp_path: Path) -> None:
    node_info = NodeInfo("n", "g", tmp_path)
    first, second = await node_info.snapshot(), await node_info.snapshot()
    assert first["system_stats"] is second["system_stats"]
    assert first["identity"] == {"node_id": "n", "node_group": "g"}
