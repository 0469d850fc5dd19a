# The two commands a newcomer needs: `make repro` (set up, run the pipeline) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.drcl-installed
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test lint lock bench bench-index bench-quality bench-noise bench-zeroshot clean

setup: $(STAMP)

# torch 2.13.0 goes in first so a CPU machine takes the local CPU build, not a CUDA one.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet --no-deps efficientnet-lite-pytorch==0.1.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

# Re-lock after a dependency change: the versions the tests then run with become the lock.
lock: setup
	(sed -n '1,3p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable \
		| sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/') > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

repro: setup
	$(BIN)/dvc repro

# Two workers or more (pytest-xdist): the end-to-end runs are mostly single-threaded start-ups.
test: setup
	$(BIN)/python -m pytest --numprocesses=auto --maxprocesses=4 --dist=worksteal

lint: setup
	$(BIN)/ruff check src tests components pipelines

# Speed benchmarks (minutes on a 2-core CPU); figures in benchmarks/speed/RESULTS.md.
bench: setup
	$(BIN)/python benchmarks/speed/evaluation.py
	$(BIN)/python benchmarks/speed/training.py
	$(BIN)/python benchmarks/speed/pipeline.py
	$(BIN)/python benchmarks/speed/serving.py

# Search at scale: every index kind from 100k to 10M items (about 1.5 hours; 10 GB of memory)
bench-index: setup
	$(BIN)/python benchmarks/speed/ann.py breakeven
	$(BIN)/python benchmarks/speed/ann.py synthetic --sizes 100000 1000000
	$(BIN)/python benchmarks/speed/ann.py synthetic --sizes 10000000 --kinds auto
	$(BIN)/python benchmarks/speed/serving.py --database 1000000 --load-seconds 10 \
		--out benchmarks/speed/serving-index-1m.json
	$(BIN)/python benchmarks/speed/ann.py wikipedia --sizes 100000 1000000 --kinds auto
	$(BIN)/python benchmarks/speed/shards.py --database 200000 --shards 2

# Quality tables (about 1.5 hours on a 2-core CPU; Wikipedia needs data/wikipedia, see README).
bench-quality: setup
	for d in uci_mfeat wikipedia_lda wikipedia_minilm; do \
		$(BIN)/python benchmarks/quality/run.py $$d || exit 1; done
	$(BIN)/python benchmarks/quality/report.py

# Label noise: every noise setting x DRCL / plain CE / correction (hours on a 2-core CPU).
bench-noise: setup
	for d in wikipedia_lda uci_mfeat wikipedia_minilm; do \
		$(BIN)/python benchmarks/noise/run.py $$d || exit 1; done
	$(BIN)/python benchmarks/noise/report.py

# Zero-shot retrieval: 5 class splits x every variant (about an hour on a 2-core CPU; OpenClipArt
# needs data/openclipart, built by benchmarks/zeroshot/openclipart.py).
bench-zeroshot: setup
	for d in wikipedia_minilm openclipart; do \
		$(BIN)/python benchmarks/zeroshot/run.py $$d || exit 1; done
	$(BIN)/python benchmarks/zeroshot/report.py

clean:
	rm -rf data/prepared models metrics plots
