# Two commands on a fresh machine: `make up` runs the platform, `make test` runs the test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch 2.13.0: the CPU build where a local wheel is provided (CI), PyPI's CUDA build elsewhere.
# On a CPU-only machine without that wheel: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=
STAMP  := $(VENV)/.installed

.PHONY: install up test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/python -m genq.core.models.gpt.kernels
	touch $@

install: $(STAMP)

up: install
	$(BIN)/genq up

# ruff, then the suite: a real Redis (GENQ_TEST_REDIS_URL, else one the suite starts), SQLite, and PostgreSQL when
# GENQ_TEST_DATABASE_URL is set.
test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/quality.py

clean:
	rm -rf $(VENV) .pytest_cache
