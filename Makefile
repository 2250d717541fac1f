# `make test` is the one test command (README, CI): it installs what the tests need, lints,
# checks formatting, proves the dependency floors (`lowest`) and runs the whole suite, the
# censorship lab included when run as root.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test deps lint format unit lab lowest
test: deps lint lowest
	$(PY) -m pytest -q -ra

deps:
	VENV=$(VENV) scripts/install-test-deps

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

unit: deps
	$(PY) -m pytest -q -ra -m "not lab"

lab: deps
	$(PY) -m pytest -q -ra -m lab

# The lowest allowed versions of every direct dependency, in a fresh .venv-lowest, running the
# unit tests that exercise them (about 30s with a warm uv cache).
lowest: deps
	$(PY) scripts/lowest_deps.py
