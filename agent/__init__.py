"""gatewatch: observability and alerting sidecar for LiteLLM Proxy."""

from importlib.metadata import PackageNotFoundError, version

try:
    # one source for the version: pyproject.toml, as installed (wheel or editable)
    __version__ = version("gatewatch")
except PackageNotFoundError:  # a checkout on PYTHONPATH that was never installed
    __version__ = "0+unknown"
