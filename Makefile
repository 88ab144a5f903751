# gatewatch: `make run` starts the sidecar on embedded defaults, `make test` runs everything.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
# `make run` needs the runtime dependencies only; tests add the `test` extra to the same venv
RUNTIME := $(VENV)/.runtime

.PHONY: run test lint test-deps min-versions bench fuzz clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(RUNTIME): pyproject.toml setup.py | $(VENV)/bin/python
	$(PIP) install --quiet -e .
	touch $(RUNTIME)

$(STAMP): pyproject.toml setup.py | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[test]'
	touch $(RUNTIME) $(STAMP)

run: $(RUNTIME)
	$(VENV)/bin/gatewatch run $(if $(CONFIG),--config $(CONFIG),)

test-deps:
	bash scripts/install-test-deps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check agent tests bench dashboards scripts setup.py
	$(VENV)/bin/mypy

# the declared lower bounds of the runtime dependencies, installed in a fresh venv and smoke-tested
min-versions: $(STAMP)
	$(PY) scripts/check-min-versions.py

test: $(STAMP) test-deps lint
	$(VENV)/bin/pytest -q tests
	$(PY) scripts/check-min-versions.py

# the ingest fuzz suite at length (make test runs 2,000 bodies); figures in bench/README.md
fuzz: $(STAMP)
	GATEWATCH_FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),20000) GATEWATCH_FUZZ_REPORT=$(or $(FUZZ_REPORT),bench/fuzz-report.json) \
		$(VENV)/bin/pytest -q -s -p no:cacheprovider --timeout 3600 tests/test_fuzz_ingest.py

bench: $(STAMP) test-deps
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
