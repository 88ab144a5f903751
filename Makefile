# gatewatch: `make run` starts the sidecar on embedded defaults, `make test` runs everything.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: run test lint test-deps bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c requirements.lock -e '.[test]'  # tests run on the image's versions
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/gatewatch run $(if $(CONFIG),--config $(CONFIG),)

test-deps:
	bash scripts/install-test-deps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check agent tests bench dashboards

test: $(STAMP) test-deps lint
	$(VENV)/bin/pytest -q tests

bench: $(STAMP) test-deps
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
