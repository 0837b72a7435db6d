# Two commands for a newcomer: `make demo` (set up, then run the demo) and `make test`.
VENV ?= .venv
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
BIN = $(VENV)/bin

.PHONY: install demo test lint bench

$(BIN)/neuralode: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e ".[experiments,dev,bench]"
	touch $@

install: $(BIN)/neuralode

demo: install
	$(BIN)/neuralode demo

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/pip install --quiet -e ".[bench-jax]"
	$(BIN)/python benchmarks/bench_speed.py
	$(BIN)/python benchmarks/bench_solvers.py
	$(BIN)/python benchmarks/bench_gradients.py
