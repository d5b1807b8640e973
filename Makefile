# The two commands (see README): `make run` and `make test`; `make lint` is what CI runs before the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-under-load lint services bench screenshots clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

## Set up and run the app on the local backend with the built-in vLLM simulator.
run: $(STAMP)
	$(VENV)/bin/sweepdeck

## Set up (venv + test services where we may install them) and run the whole test suite.
TEST_WORKERS ?= 2
test: $(STAMP) services
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=25

## Lint (ruff, configured in pyproject.toml) and type-check config/ and backends/ (mypy).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## The whole suite three times with a CPU hog on every core (the suite must pass on a busy machine).
test-under-load: $(STAMP) services
	@bash scripts/test-under-load.sh 3 -- $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

## Install the Debian packages the integration tests start (sshd, SLURM, PostgreSQL) when root.
services:
	@bash scripts/install-services.sh

bench: $(STAMP)
	@for b in tests/benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

screenshots: $(STAMP)
	$(PY) scripts/screenshots.py
	$(PY) scripts/readme.py

clean:
	rm -rf $(VENV) build dist
