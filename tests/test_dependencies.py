"""Installed and declared versions are at least the ones that close known advisories."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

# package -> (minimum, why)
MINIMUMS = {
    "starlette": ("0.47.2", "CVE-2025-54121 (multipart spooling blocks the event loop); >= 0.40.0 for CVE-2024-47874"),
    "pillow": ("11.3.0", "CVE-2025-48379 (DDS encoder heap overflow)"),
    "fastapi": ("0.115", "the first release on a starlette with CVE-2024-47874 closed"),
    "uvicorn": ("0.30", "current h11 / httptools handling"),
}
REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"


def _declared() -> dict[str, Requirement]:
    found = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            found[re.sub(r"[-_.]+", "-", req.name).lower()] = req
    return found


@pytest.mark.parametrize("package", list(MINIMUMS))
def test_installed_version_closes_the_advisories(package: str) -> None:
    minimum, why = MINIMUMS[package]
    installed = Version(version(package))
    assert installed >= Version(minimum), f"{package} {installed} < {minimum}: {why}"
    if package == "starlette":
        assert installed >= Version("0.40.0")


@pytest.mark.parametrize("package", list(MINIMUMS))
def test_requirements_declare_the_minimum(package: str) -> None:
    minimum, why = MINIMUMS[package]
    req = _declared().get(package)
    assert req is not None, f"requirements.txt does not declare {package}"
    lower = [Version(spec.version) for spec in req.specifier if spec.operator in (">=", "==", "~=", ">")]
    assert lower, f"requirements.txt declares {req} with no lower bound"
    assert max(lower) >= Version(minimum), f"requirements.txt allows {req}, below {minimum}: {why}"
