"""The lock is what is installed, agrees with itself and with the declared ranges, and every route installs it.

A fresh clone resolves nothing: `make install`, `make test`, CI, both dstack configurations and the README's GPU
route install lock/*.txt. These tests fail when the environment drifts from the lock, when a range is edited
without re-locking, or when an install route goes around the lock.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from app.engine.versions import read_lock

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "lock"
DEV, RUNTIME_CPU, RUNTIME_CUDA, UV, BUILD = (
    LOCK / f for f in ("dev-cpu.txt", "runtime-cpu.txt", "runtime-cuda.txt", "uv.txt", "build.txt")
)
INPUTS = [ROOT / "requirements.txt", ROOT / "requirements-dev.txt", ROOT / "requirements-bench.txt", LOCK / "torch.txt"]
EXCLUDED = {"opencv-python"}  # lock/excludes.txt
CUDA_ONLY = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")  # what torch's CUDA build adds to the CPU build


def _installed() -> dict[str, str]:
    # The venv's own site-packages, not all of sys.path: importing setuptools (torch's inductor does, to build its
    # kernels) appends setuptools/_vendor to sys.path, whose vendored copies (older importlib-metadata, packaging,
    # zipp) carry dist-info too, and are not what is installed.
    site = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions(path=site)}


def _declared(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


# --- the environment is the lock ----------------------------------------------------------------------


def test_installed_versions_equal_the_dev_lock() -> None:
    """`make test` runs in an environment synced to lock/dev-cpu.txt: nothing newer, older, missing or extra."""
    locked, installed = read_lock(DEV) | read_lock(UV), _installed()
    differ = {name: (installed.get(name), pin) for name, pin in locked.items() if installed.get(name) != pin}
    assert not differ, f"installed differs from the lock (installed, locked): {differ}; run `make install-dev`"
    extra = set(installed) - set(locked) - {"pip", "sdxl-serve"}
    assert not extra, f"installed but not in the lock: {sorted(extra)}"


def test_read_lock_reads_pins_not_hashes(tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "# comment\nPy_Yaml==6.0.4 \\\n    --hash=sha256:ab\n    # via x\ntorch==2.13.0+cpu ; sys_platform == 'linux'\n"
    )
    assert read_lock(lock) == {"py-yaml": "6.0.4", "torch": "2.13.0+cpu"}


# --- the locks agree with each other and with the ranges -----------------------------------------------


def test_runtime_cpu_lock_is_the_dev_lock_minus_the_tools() -> None:
    dev, runtime = read_lock(DEV), read_lock(RUNTIME_CPU)
    assert {name: dev.get(name) for name in runtime} == runtime


def test_cuda_lock_differs_from_the_cpu_lock_only_in_torchs_build() -> None:
    cpu, cuda = read_lock(RUNTIME_CPU), read_lock(RUNTIME_CUDA)
    assert cpu["torch"].endswith("+cpu") and "+" not in cuda["torch"], "CPU build for CI, PyPI's CUDA build for GPUs"
    assert Version(cpu["torch"]).public == Version(cuda["torch"]).public, "one torch release in both lanes"
    shared = set(cpu) - {"torch"}
    assert {name: cuda.get(name) for name in shared} == {name: cpu[name] for name in shared}
    added = set(cuda) - set(cpu)
    assert added and all(CUDA_ONLY.match(name) for name in added), sorted(added)


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_lock_satisfies_every_declared_range(path: Path) -> None:
    """Editing a range without `make lock` fails here, not on a user's machine next week."""
    locked = read_lock(DEV)
    for req in _declared(path):
        name = canonicalize_name(req.name)
        assert name in locked, f"{req} is declared in {path.name} but not locked; run `make lock`"
        assert req.specifier.contains(locked[name], prereleases=True), f"lock has {name}=={locked[name]}, not {req}"


def test_runtime_lock_holds_every_runtime_requirement() -> None:
    for lock in (RUNTIME_CPU, RUNTIME_CUDA):
        locked = read_lock(lock)
        missing = [str(r) for r in _declared(ROOT / "requirements.txt") if canonicalize_name(r.name) not in locked]
        assert not missing, f"{lock.name} lacks {missing}"


@pytest.mark.parametrize("path", [DEV, RUNTIME_CPU, RUNTIME_CUDA, UV, BUILD], ids=lambda p: p.name)
def test_every_pin_is_exact_and_hashed(path: Path) -> None:
    entries = re.split(r"\n(?=[a-z0-9])", path.read_text())
    pins = [e for e in entries if re.match(r"[a-z0-9]", e)]
    assert pins
    for entry in pins:
        assert re.match(r"[a-z0-9][a-z0-9._-]*==\S+ \\\n", entry), f"not an exact pin: {entry.splitlines()[0]}"
        assert "--hash=sha256:" in entry, f"no hash: {entry.splitlines()[0]}"
    assert not EXCLUDED & set(read_lock(path)), "opencv-python would share cv2/ with the headless build (libGL)"


def test_builds_use_the_locked_setuptools() -> None:
    """One package in the lock (cursor, via dstack) is a source distribution: it is built with lock/build.txt."""
    build, dev = read_lock(BUILD), read_lock(DEV)
    assert build["setuptools"] == dev["setuptools"]
    flags = (ROOT / "Makefile").read_text().split("SYNC_FLAGS = ", 1)[1].split("\n", 1)[0]
    assert "--build-constraints lock/build.txt" in flags and "--require-build-hashes" in flags


def test_the_tested_transformers_works_with_the_locked_peft() -> None:
    """The drift of 2026-12-01: transformers 5.24 needs a peft that does not exist. The lock must not hold it."""
    from transformers.integrations.peft import MIN_PEFT_VERSION

    locked = read_lock(DEV)
    assert Version(locked["peft"]) >= Version(MIN_PEFT_VERSION)


# --- every install route installs the lock --------------------------------------------------------------


def _commands(text: str) -> list[list[str]]:
    """Shell commands in a text, one per line, with `\\` continuations joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [shlex.split(line.split(" #", 1)[0]) for line in joined.splitlines() if line.strip()]


VALUE_OPTIONS = {"--python", "-r", "--requirement", "-c", "--constraint", "--build-constraints"}


def _pip_installs(commands: list[list[str]]) -> list[tuple[str, str, list[str], list[str], set[str]]]:
    """(tool, verb, requirement files, named targets, flags) of every `pip install`, `uv pip install|sync`."""
    found = []
    for words in commands:
        for i in range(len(words) - 1):
            if not (words[i].endswith("pip") and words[i + 1] in ("install", "sync")):
                continue
            tool = "uv" if i > 0 and words[i - 1].endswith("uv") else "pip"
            files, targets, flags = [], [], set()
            rest = iter(words[i + 2 :])
            for word in rest:
                if word in VALUE_OPTIONS:
                    value = next(rest)
                    if word in ("-r", "--requirement"):
                        files.append(value)
                elif word.startswith("-"):
                    flags.add(word)
                else:
                    targets.append(word)
            if words[i + 1] == "sync":  # sync takes its requirement files as arguments
                files, targets = files + targets, []
            found.append((tool, words[i + 1], files, targets, flags))
    return found


def _installs_only_locks(installs: list[tuple[str, str, list[str], list[str], set[str]]]) -> None:
    assert installs
    for tool, verb, files, targets, flags in installs:
        where = f"{tool} pip {verb} {files} {targets} {sorted(flags)}"
        assert all(re.fullmatch(r"lock/[a-z-]+\.txt", f) for f in files), f"installs other than a lock: {where}"
        # Besides locks, only the project itself: editable, no dependencies, built by the locked setuptools.
        assert targets in ([], ["."]), where
        if targets:
            assert {"-e", "--no-deps", "--no-build-isolation"} <= flags, where
        if tool == "pip" and files:
            assert {"--no-deps", "--require-hashes"} <= flags, f"pip must install exactly the lock: {where}"


def test_readme_gpu_route_installs_the_cuda_lock() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Real SDXL on a GPU", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    installs = _pip_installs(_commands(block))
    _installs_only_locks(installs)
    assert any("lock/runtime-cuda.txt" in files for _, _, files, _, _ in installs)


def _expand(makefile: str) -> str:
    """The recipes with the Makefile's own `NAME = value` variables filled in (what `make -n` would print)."""
    variables = dict(re.findall(r"^([A-Z_]+) \??= (.*(?:\\\n.*)*)$", makefile, re.M))
    variables = {name: re.sub(r"\\\n\s*", " ", value) for name, value in variables.items()}
    variables |= {"UV": "uv", "PY": "python", "PYTHON": "python3.11", "VENV": ".venv"}
    recipes = "\n".join(line.strip() for line in makefile.splitlines() if line.startswith("\t"))
    for _ in range(5):  # variables may name variables
        recipes = re.sub(r"\$\(([A-Z_]+)\)", lambda m: variables.get(m.group(1), m.group(0)), recipes)
    return recipes.replace(".venv/bin/pip", "pip")


def test_makefile_installs_only_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipes = _expand(makefile)
    installs = _pip_installs(_commands(recipes))
    _installs_only_locks(installs)
    synced = {f for tool, verb, files, _, _ in installs if verb == "sync" for f in files}
    assert synced == {"lock/runtime-cpu.txt", "lock/dev-cpu.txt"}
    assert "pip install --upgrade" not in makefile, "an unpinned upgrade is drift"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install" not in ci, "CI installs through the Makefile, from the lock"


def test_the_project_builds_with_the_locked_setuptools_without_warnings(tmp_path: Path) -> None:
    """`pip install -e .` builds our metadata; a deprecated pyproject form (a `license` table instead of an SPDX
    string) warns on every install. Any warning fails here."""
    out = tmp_path / "metadata"
    out.mkdir()
    build = f"from setuptools import build_meta; build_meta.prepare_metadata_for_build_editable({str(out)!r})"
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", build], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Warning" not in done.stderr, done.stderr[-3000:]
