# gatewatch: `make run` starts the sidecar on embedded defaults, `make test` runs everything.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: run test test-litellm-newest lint test-deps bench clean

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

# the newest LiteLLM's venv installs (cached per lock hash, file-locked) while the suite runs
test: $(STAMP) test-deps lint
	mkdir -p .cache && (GATEWATCH_E2E_LITELLM_VERSION=newest $(PY) -m tests.e2e.litellm_venv \
	  > .cache/litellm-newest-install.log 2>&1 &) && $(VENV)/bin/pytest -q tests
	$(MAKE) test-litellm-newest

# the e2e comparison again, against the newest LiteLLM the package index has (its own cached
# venv and lock file: tests/e2e/litellm_venv.py NEWEST_VERSION)
test-litellm-newest: $(STAMP)
	GATEWATCH_E2E_LITELLM_VERSION=newest $(VENV)/bin/pytest -q tests/e2e/test_e2e_counts.py tests/e2e/test_e2e_fidelity.py

bench: $(STAMP) test-deps
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
