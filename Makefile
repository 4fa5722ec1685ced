# Set-up is automatic: every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export MESSAGING_CONFIG ?= config.json

.PHONY: run shell poll test e2e soak bench bench-peer lint format clean

# A .venv whose python does not run or has no pip was left half-built (python3-venv
# missing, no network, a removed python): build it again instead of taking it as done.
ifneq ($(shell $(BIN)/python -c 'import pip' 2>/dev/null && echo ok),ok)
.PHONY: $(BIN)/python
endif

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and f"Python 3.11+ is required; $(PYTHON) is {sys.version.split()[0]}. Name a newer one: PYTHON=python3.12 make run")'
	rm -rf $(VENV)
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "make: $(PYTHON) -m venv failed: install python3-venv (apt-get install python3-venv), or name another python: PYTHON=python3.12 make run" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the package metadata changes.
$(VENV)/.installed: $(BIN)/python setup.cfg setup.py
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

## Serve the API with gunicorn on 127.0.0.1:2016 (embedded PostgreSQL by default).
run: $(VENV)/.installed
	$(BIN)/python -m messaging.serve

## A Python shell with the app loaded: config, db, sql("SELECT ..."), send_sms(...), ...
shell: $(VENV)/.installed
	$(BIN)/flask --app messaging shell

## Ask the provider once about messages still `sent` (what cron runs).
poll: $(VENV)/.installed
	$(BIN)/flask --app messaging poll-status

## Run the test suite (against 127.0.0.1:5432 when it answers, else embedded PostgreSQL),
## in TEST_WORKERS processes (pytest-xdist), a test file to each at a time; then, alone,
## the tests marked serial, which time requests at a fake provider.
# 2: most of the suite waits on subprocesses, servers and leases, so two processes halve it
# on 2 cores; with 4, the tests' pools and servers passed PostgreSQL's default 100 connections.
TEST_WORKERS ?= 2
test: $(VENV)/.installed
	$(BIN)/ruff check messaging tests bench
	$(BIN)/python -m pytest -m "not slow and not serial" -q -n $(TEST_WORKERS) --dist loadfile
	$(BIN)/python -m pytest -m "serial and not slow" -q

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

## Remove .venv (the next make builds it again); the data under var/ stays.
clean:
	rm -rf $(VENV) *.egg-info
