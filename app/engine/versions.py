"""Do the installed packages work together, and are they the ones the lock names?

Checked once at startup, so that dependency drift is reported as what it is (which packages, which versions, how
to fix it) instead of as the symptom it causes later, deep inside a model load. Reads only package metadata:
nothing here imports torch, diffusers or transformers unless they are asked for their own minimums.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from app.errors import first_line

logger = logging.getLogger(__name__)

LOCK_DIR = Path(__file__).resolve().parents[2] / "lock"
LOCK_HINT = (
    "install the tested versions from the lock: `make install` (CPU), or on a GPU "
    "`pip install --no-deps --require-hashes -r lock/runtime-cuda.txt` (README: Dependencies and the lock)"
)

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@dataclass(frozen=True)
class Minimum:
    """`package` needs `needs` at least at the version held in `module.attribute` (the library's own constant,
    so the check follows the library rather than a copy of its number)."""

    package: str
    needs: str
    module: str
    attribute: str


# Pairs that a resolver cannot see: these minimums are enforced at run time, not declared as requirements.
KNOWN_MINIMUMS = (
    # transformers' PEFT integration (text-encoder LoRA): 5.24 raised this past every released peft.
    Minimum("transformers", "peft", "transformers.integrations.peft", "MIN_PEFT_VERSION"),
    # diffusers' PEFT backend (per-request LoRA) silently turns off below these.
    Minimum("diffusers", "peft", "diffusers.utils.constants", "MIN_PEFT_VERSION"),
    Minimum("diffusers", "transformers", "diffusers.utils.constants", "MIN_TRANSFORMERS_VERSION"),
)


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _at_least(have: str, need: str) -> bool:
    try:
        return Version(have) >= Version(need)
    except InvalidVersion:
        return True  # not ours to judge; the lock comparison still reports it


def _same(have: str, pinned: str) -> bool:
    try:
        return Version(have) == Version(pinned)  # "1.0" and "1.0.0" are one version
    except InvalidVersion:
        return have == pinned


def conflicts(minimums: tuple[Minimum, ...] = KNOWN_MINIMUMS) -> list[str]:
    """One sentence per pair of installed packages that do not work together."""
    found = []
    for rule in minimums:
        have_package, have_needed = installed(rule.package), installed(rule.needs)
        if have_package is None or have_needed is None:
            continue
        module = importlib.import_module(rule.module)  # an import failure is the caller's to report
        minimum = getattr(module, rule.attribute, None)
        if minimum is None:
            continue  # the library no longer has this constant: nothing to compare
        minimum = str(minimum)
        if not _at_least(have_needed, minimum):
            found.append(
                f"{rule.package} {have_package} needs {rule.needs} >= {minimum}, "
                f"but {rule.needs} {have_needed} is installed"
            )
    return found


def read_lock(path: Path) -> dict[str, str]:
    """`name==version` lines of a lock file (hashes, markers and comments ignored), by canonical name."""
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := _PIN.match(line.strip()):
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def runtime_lock() -> Path | None:
    """The lock this environment should have come from: torch's build tells CPU from CUDA."""
    torch = installed("torch") or ""
    path = LOCK_DIR / ("runtime-cpu.txt" if torch.endswith("+cpu") else "runtime-cuda.txt")
    return path if path.is_file() else None  # e.g. installed from a wheel, without the repository


def drift(lock: Path) -> list[str]:
    """Packages whose installed version is not the one the lock names."""
    found = []
    for name, pinned in sorted(read_lock(lock).items()):
        have = installed(name)
        if have is None:
            found.append(f"{name} not installed (lock: {pinned})")
        elif not _same(have, pinned):
            found.append(f"{name} {have} (lock: {pinned})")
    return found


def check_at_startup(import_libraries: Callable[[], None]) -> str | None:
    """Packages that cannot work together stop startup with their names; mere drift from the lock is a warning,
    since an operator may upgrade one package on purpose (and then runs the tests, see the README).

    The lock is compared first, from metadata alone: if a library then fails to import (transformers checks its
    own dependencies' versions at import), the failure is reported together with what drifted."""
    lock = runtime_lock()
    changed = drift(lock) if lock is not None else []
    if lock is not None and changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        logger.warning("installed packages differ from lock/%s: %s; %s", lock.name, shown, LOCK_HINT)
    try:
        import_libraries()
        found = conflicts()
    except Exception as exc:  # an import-time version check, or a broken install
        drifted = f" (differing from the lock: {', '.join(changed)})" if changed else ""
        # Its first line only: the rest is pip advice for one package, where the fix is the whole lock.
        return f"the installed packages do not import: {first_line(exc)}{drifted}; {LOCK_HINT}"
    if found:
        return f"installed packages do not work together: {'; '.join(found)}; {LOCK_HINT}"
    return None
