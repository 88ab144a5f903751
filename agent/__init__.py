"""gatewatch: observability and alerting sidecar for LiteLLM Proxy."""

__version__ = "0.1.0"
