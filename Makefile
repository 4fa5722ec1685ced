# Set-up is automatic: every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export MESSAGING_CONFIG ?= config.json

.PHONY: run test e2e soak bench bench-peer lint format clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall when the package metadata changes.
$(VENV)/.installed: $(BIN)/python setup.cfg setup.py
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

## Serve the API with gunicorn on 127.0.0.1:2016 (embedded PostgreSQL by default).
run: $(VENV)/.installed
	$(BIN)/python -m messaging.serve

## Run the test suite (against 127.0.0.1:5432 when it answers, else embedded PostgreSQL).
test: $(VENV)/.installed
	$(BIN)/ruff check messaging tests bench
	$(BIN)/python -m pytest -m "not slow" -q

## The production path for real: nginx (installed with apt-get if missing, as root) ->
## gunicorn -> PostgreSQL, poll-status as cron runs it; checks the database, stops it all.
e2e: $(VENV)/.installed
	$(BIN)/python tests/e2e/run.py

## The long load, soak and full differential tests.
soak: $(VENV)/.installed
	$(BIN)/python -m pytest -m slow -q

## Benchmarks: figures and ratios against baselines measured in the same run.
bench: $(VENV)/.installed
	$(BIN)/python -m bench

## K1: msg/s with 100 recipients a request beside Kannel 1.4.5 in the same run (installs
## kannel, kannel-extras and wrk with apt-get if missing, as root).
bench-peer: $(VENV)/.installed
	$(BIN)/python -m bench.peer

lint: $(VENV)/.installed
	$(BIN)/ruff check messaging tests bench
	$(BIN)/ruff format --check messaging tests bench

format: $(VENV)/.installed
	$(BIN)/ruff format messaging tests bench

clean:
	rm -rf $(VENV) *.egg-info
