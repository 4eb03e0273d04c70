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

.PHONY: install dev test test-fast test-kafka test-chaos bench
install: $(STAMP)

dev: $(STAMP)  ## the hub's main job: embedded Postgres, a worker, the demo
	exec $(BIN)/hub dev --stop-with-parent $(DEV_ARGS)  # stops when make is (SIGINT too)

test: $(STAMP)  ## every test (slow ones too) on both brokers, the chaos suite, lint and type checks
	$(BIN)/ruff check hub api workflows subscribers connectors tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not chaos"
	HUB_TEST_BROKER=kafka $(BIN)/python -m pytest -q -m "broker and not kafka"
	HUB_TEST_BROKER=kafka $(BIN)/python -m pytest -q -s -m chaos  # the chaos suite, on Apache Kafka

test-kafka: $(STAMP)  ## the broker tests on Apache Kafka only
	HUB_TEST_BROKER=kafka $(BIN)/python -m pytest -q -m "broker or kafka"

test-chaos: $(STAMP)  ## the chaos suite on its own (Tansu; HUB_TEST_BROKER=kafka for Apache Kafka)
	$(BIN)/python -m tests.chaos

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/recovery.py
