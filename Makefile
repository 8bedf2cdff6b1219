# One way to install, run, test and lint, the same locally and in CI.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# requirements.txt leaves torch open for GPU users; the Makefile pins one release so a fresh venv
# resolves fast and the same everywhere. Override with e.g. `make install TORCH='torch>=2.4'`.
TORCH ?= torch==2.13.0

.PHONY: install install-dev serve test lint bench clean

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps "invisible-watermark>=0.2.0"
	$(PIP) install -q --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt
	touch $@

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
# `make bench BENCH_ARGS=--quick` for a smoke run.
bench: install-dev
	$(PIP) install -q -r requirements-bench.txt
	$(PY) -m bench $(BENCH_ARGS)
	$(PY) -m bench.models

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
