# Two commands do all the set-up on a fresh machine: `make dev` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

.PHONY: install dev test test-fast lint bench
install: $(STAMP)

dev: $(STAMP)  ## the hub's main job: embedded Postgres, a worker, the demo
	$(BIN)/hub dev

test: $(STAMP)  ## every test, the slow ones too, plus lint and type checks
	$(BIN)/ruff check hub workflows subscribers connectors tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/recovery.py
