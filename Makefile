# Thin targets; the logic lives in the scripts they call.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS := runtime,operator,storage,dev

.PHONY: setup test lint cluster cluster-up model-store demo demo-check bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

lint: setup
	$(VENV)/bin/ruff check .

cluster: setup
	bash e2e/cluster/build.sh

cluster-up: cluster
	$(PY) -m e2e.localkube

model-store: setup
	$(PY) examples/mnist/build_model_store.py

test: setup cluster
	$(VENV)/bin/ruff check .
	$(PY) -m pytest tests e2e

# TorchServe vs our runtime, side by side (~10 min); BENCH_ARGS=--quick for a short development run.
bench: setup
	$(PY) bench/serving_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
