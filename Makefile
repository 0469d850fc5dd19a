# The two commands a newcomer needs: `make repro` (set up, run the pipeline) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.drcl-installed
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test lint clean

setup: $(STAMP)

# torch 2.13.0 goes in first so a CPU machine takes the local CPU build, not a CUDA one.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet --no-deps efficientnet-lite-pytorch==0.1.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests components pipelines

clean:
	rm -rf data/prepared models metrics plots
