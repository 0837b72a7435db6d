# Two commands for a newcomer: `make demo` (set up, then run the demo) and `make test`.
VENV ?= .venv
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
BIN = $(VENV)/bin

.PHONY: install demo test lint docs wheel-check bench

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

$(BIN)/mkdocs: $(BIN)/neuralode
	$(BIN)/pip install --quiet -e ".[docs]"
	touch $@

# The site, into site/; `mkdocs serve` shows it while editing. (NO_MKDOCS_2_WARNING: the
# Material theme's banner about MkDocs 2.0, printed on every build.)
docs: $(BIN)/mkdocs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The wheel alone, with torch and none of the extras, in a fresh virtual environment.
wheel-check:
	PYTHON=$(PYTHON) TORCH_VERSION=$(TORCH_VERSION) .ci/wheel-check

bench: install
	$(BIN)/pip install --quiet -e ".[bench-jax]"
	$(BIN)/python benchmarks/bench_speed.py
	$(BIN)/python benchmarks/bench_solvers.py
	$(BIN)/python benchmarks/bench_gradients.py
