# One way to install, run, test and lint, the same locally and in CI. Every install comes from lock/
# (exact versions and hashes); the ranges in requirements*.txt only feed `make lock`.
VENV ?= .venv
PYTHON ?= python3.11
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# uv does not read pip's configuration: hand it pip's find-links, where a machine may keep the CPU build of
# torch that lock/*-cpu.txt names (empty elsewhere; see the README's "Dependencies and the lock").
# pip separates several find-links with spaces, uv with commas.
comma := ,
export UV_FIND_LINKS ?= $(subst $() ,$(comma),$(strip $(PIP_FIND_LINKS)))
# The project is built by the locked setuptools, not a fresh download of the newest one. --compile-bytecode:
# uv does not write .pyc files by default (pip does), and where PYTHONDONTWRITEBYTECODE is set nothing else
# will, so every server start and test subprocess would compile transformers and torch from source again.
INSTALL_PROJECT = $(UV) pip install -q --compile-bytecode --python $(PY) --no-deps --no-build-isolation -e .
SYNC_FLAGS = -q --compile-bytecode --python $(PY) --build-constraints lock/build.txt --require-build-hashes
LOCK_FLAGS = -q --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes \
	--excludes lock/excludes.txt --custom-compile-command "make lock"

.PHONY: install install-dev serve test lint bench lock clean

# uv itself comes from a hash-pinned file through the venv's own pip; it then installs the lock exactly
# (`uv pip sync` also removes anything the lock does not name).
$(UV): lock/uv.txt
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "the locks are resolved for Python 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps --require-hashes -r lock/uv.txt
	touch $@

$(VENV)/.installed: $(UV) lock/runtime-cpu.txt lock/build.txt pyproject.toml
	$(UV) pip sync $(SYNC_FLAGS) lock/runtime-cpu.txt
	$(INSTALL_PROJECT)
	rm -f $(VENV)/.installed-dev  # the sync removed the dev tools
	touch $@

$(VENV)/.installed-dev: $(UV) lock/dev-cpu.txt lock/build.txt pyproject.toml
	$(UV) pip sync $(SYNC_FLAGS) lock/dev-cpu.txt
	$(INSTALL_PROJECT)
	touch $@ $(VENV)/.installed  # the dev lock holds the runtime lock's versions (tests/test_lock.py)

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# The built-in tiny model, offline, on loopback.
serve: install
	SDXL_MODEL=$${SDXL_MODEL:-tiny} $(PY) -m app serve

test: install-dev
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install-dev
	$(PY) -m ruff check app tests bench
	$(PY) -m ruff format --check app tests bench
	$(PY) -m mypy

# Benchmarks on the tiny model (not part of the tests): prints tables, writes bench/results/{results,models}.json
# and results.png.
# `make bench BENCH_ARGS=--quick` for a smoke run. `make bench BENCH_ARGS="--device cuda --full-size"`: the real SDXL
# architecture on a GPU instead (bench/full_size.py; writes bench/results/full-size-cuda-sdxl.json); models and
# bookkeeping not run.
bench: install-dev
	$(PY) -m bench $(BENCH_ARGS)
	$(if $(findstring --full-size,$(BENCH_ARGS)),,$(PY) -m bench.models)
	$(if $(findstring --full-size,$(BENCH_ARGS)),,$(PY) -m bench.bookkeeping)
	$(if $(findstring --full-size,$(BENCH_ARGS)),,$(PY) -m bench.png)

# Re-resolve every lock from the ranges (requirements*.txt, lock/torch.txt), then run `make test`: see the
# README for upgrading safely. The dev lock is resolved first; the runtime locks are held to its versions, so
# what the tests ran is what a deploy installs. The CUDA lock is held to the CPU lock's versions except torch
# (lock/.cpu-versions.txt leaves it out), and resolved without pip's find-links so it takes PyPI's CUDA build.
lock: $(UV)
	$(UV) pip compile $(LOCK_FLAGS) lock/uv.in -o lock/uv.txt
	$(UV) pip compile $(LOCK_FLAGS) requirements.txt requirements-dev.txt requirements-bench.txt lock/torch.txt \
		-o lock/dev-cpu.txt
	$(UV) pip compile $(LOCK_FLAGS) requirements.txt lock/torch.txt -c lock/dev-cpu.txt -o lock/runtime-cpu.txt
	$(UV) pip compile $(LOCK_FLAGS) lock/build.in -c lock/dev-cpu.txt -o lock/build.txt
	$(UV) pip compile -q --python-version 3.11 --python-platform x86_64-manylinux_2_28 --excludes lock/excludes.txt \
		--no-header --no-annotate --no-emit-package torch requirements.txt -c lock/dev-cpu.txt \
		-o lock/.cpu-versions.txt
	UV_FIND_LINKS= $(UV) pip compile $(LOCK_FLAGS) requirements.txt lock/torch.txt -c lock/.cpu-versions.txt \
		-o lock/runtime-cuda.txt
	rm lock/.cpu-versions.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
