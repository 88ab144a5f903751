# gatewatch: `make run` starts the sidecar on embedded defaults, `make test` runs everything.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
# `make run` needs the runtime dependencies only; tests add the `test` extra to the same venv
RUNTIME := $(VENV)/.runtime
# the console tests use Debian's chromium; the playwright package must never fetch its own browser
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: run test test-litellm-newest lint test-deps min-versions bench fuzz clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# both on requirements.lock's versions: the image's, so the tests run what ships
$(RUNTIME): pyproject.toml setup.py requirements.lock | $(VENV)/bin/python
	$(PIP) install --quiet -c requirements.lock -e .
	touch $(RUNTIME)

$(STAMP): pyproject.toml setup.py requirements.lock | $(VENV)/bin/python
	$(PIP) install --quiet -c requirements.lock -e '.[test]'
	touch $(RUNTIME) $(STAMP)

run: $(RUNTIME)
	$(VENV)/bin/gatewatch run $(if $(CONFIG),--config $(CONFIG),)

test-deps:
	bash scripts/install-test-deps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check agent tests bench dashboards scripts setup.py
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/test_layering.py

# the declared lower bounds of the runtime dependencies, installed in a fresh venv and smoke-tested
min-versions: $(STAMP)
	$(PY) scripts/check-min-versions.py

# the newest LiteLLM's venv installs (cached per lock hash, file-locked) while the suite runs
test: $(STAMP) test-deps lint
	mkdir -p .cache && (GATEWATCH_E2E_LITELLM_VERSION=newest $(PY) -m tests.e2e.litellm_venv \
	  > .cache/litellm-newest-install.log 2>&1 &) && $(VENV)/bin/pytest -q tests
	$(MAKE) test-litellm-newest
	$(PY) scripts/check-min-versions.py

# the newest LiteLLM: the e2e comparison again against it (its own cached venv and lock file:
# tests/e2e/litellm_venv.py NEWEST_VERSION)
test-litellm-newest: $(STAMP)
	GATEWATCH_E2E_LITELLM_VERSION=newest $(VENV)/bin/pytest -q tests/e2e/test_e2e_counts.py tests/e2e/test_e2e_fidelity.py

# the ingest fuzz suite at length (make test runs 2,000 bodies); figures in bench/README.md
fuzz: $(STAMP)
	GATEWATCH_FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),20000) GATEWATCH_FUZZ_REPORT=$(or $(FUZZ_REPORT),bench/fuzz-report.json) \
		$(VENV)/bin/pytest -q -s -p no:cacheprovider --timeout 3600 tests/test_fuzz_ingest.py

bench: $(STAMP) test-deps
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
