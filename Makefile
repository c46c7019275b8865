# The two front-door commands (see README.md). Both create .venv and install what they need.
#   make train   the main job: train on the built-in data set, write outputs/shapley-vit-shapes
#   make test    lint and the test suite (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch: an unpinned torch pulls a multi-GB CUDA build. On a GPU machine
# pass the torch you want, e.g. `make train TORCH=torch`.
TORCH ?= torch==2.13.0
# accelerate launch gives each process one CPU thread unless told otherwise (measured: the main
# job ran single-threaded on a 2-core CPU); one process gets every core.
THREADS ?= $(shell nproc 2>/dev/null || echo 1)

.PHONY: install train test

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

train: install
	$(VENV)/bin/accelerate launch --num_cpu_threads_per_process $(THREADS) examples/train.py $(ARGS)

test: install
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples benchmarks
	$(PY) -m pytest -q
