# gzpipe: `make demo` runs the study on the synthetic default, `make test` runs the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow test-all test-gpu bench clean

setup: $(STAMP)

# The GPU extra (DALI, nvImageCodec) where its wheels exist (Linux); the exact versions from constraints.txt. Zoobot
# and galaxy-datasets (the tests make and read their files with their code) come without their dependencies:
# galaxy-datasets asks for a torchaudio that has no build for every torch, and the tests need none of it.
GPU_EXTRA := $(shell [ "$$(uname -s)" = Linux ] && echo ",gpu")

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,dask$(GPU_EXTRA)]'
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt galaxy-datasets zoobot
	touch $(STAMP)

demo: setup
	$(BIN)/gzpipe study --preset demo

test: setup
	$(BIN)/python -m pytest -q --durations=20

# The slow tests (the reliability suite's SIGINT runs and whole-study kills, DDP, the demo-sized study):
# CI runs them after `make test` when its time budget allows.
test-slow: setup
	$(BIN)/python -m pytest -q --durations=10 -m "slow and not gpu"

test-all: setup
	$(BIN)/python -m pytest -q -m "not gpu"

test-gpu: setup
	$(BIN)/python -m pytest -q -m gpu

bench: setup
	$(BIN)/python benchmarks/bench_shard.py

clean:
	rm -rf artifacts/model_comparison artifacts/demo .pytest_cache
