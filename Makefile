# restem: `make demo` runs the whole ReST-EM loop on the embedded default; `make test` runs the tests.
# Both set everything up on a fresh machine (CPU torch first, then the project).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: setup system sandbox browser demo test lint dev bench

setup: $(VENV)/.restem-installed

$(VENV)/.restem-installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0   # the CPU wheel; before the project, so no CUDA build is pulled
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

system:  # Docker engine for the code sandbox (root; apt-get + dockerd)
	bash scripts/setup_docker.sh

sandbox: setup system
	$(VENV)/bin/restem sandbox build

browser:  # headless Chromium for the UI test (root; apt-get install chromium when missing)
	bash scripts/setup_browser.sh

$(DAGSTER_HOME)/dagster.yaml:  # instance settings (concurrency pools): copied once, an edited copy is kept
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: setup $(DAGSTER_HOME)/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	$(VENV)/bin/restem demo

test: setup sandbox browser
	mkdir -p $(DAGSTER_HOME)
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

dev: setup $(DAGSTER_HOME)/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	$(VENV)/bin/dagster dev -w workspace.yaml

bench: setup sandbox
	$(PY) -m pip install -q -e '.[bench]'
	for b in benchmarks/bench_*.py; do $(PY) $$b --quick || exit 1; done
