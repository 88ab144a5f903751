# gatewatch: `make run` starts the sidecar on embedded defaults, `make test` runs everything.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: run test lint test-deps bench fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/gatewatch run $(if $(CONFIG),--config $(CONFIG),)

test-deps:
	bash scripts/install-test-deps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check agent tests bench dashboards

test: $(STAMP) test-deps lint
	$(VENV)/bin/pytest -q tests

# the ingest fuzz suite at length (make test runs 2,000 bodies); figures in bench/README.md
fuzz: $(STAMP)
	GATEWATCH_FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),20000) GATEWATCH_FUZZ_REPORT=$(or $(FUZZ_REPORT),bench/fuzz-report.json) \
		$(VENV)/bin/pytest -q -s -p no:cacheprovider --timeout 3600 tests/test_fuzz_ingest.py

bench: $(STAMP) test-deps
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
