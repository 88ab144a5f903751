"""Logging setup with a last line of defence against secrets in log lines.

Components should never log a secret in the first place; the redacting filter masks any
registered secret value (tokens, webhook URLs) that slips into a message anyway.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    if value and len(value) >= 6:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            message = record.getMessage()
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


def register_config_secrets(obj: Any, _seen: set[int] | None = None) -> None:
    """Walk a config object and register every Secret value it holds."""
    from dataclasses import fields, is_dataclass

    from agent.configtypes import Secret

    seen = _seen if _seen is not None else set()
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, Secret):
        register_secret(str(obj))
    elif is_dataclass(obj):
        for f in fields(obj):
            register_config_secrets(getattr(obj, f.name), seen)
    elif isinstance(obj, dict):
        for value in obj.values():
            register_config_secrets(value, seen)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            register_config_secrets(value, seen)


def configure(level: str = "info", fmt: str = "text") -> None:
    """Root logging to stderr: `fmt` is `text` (for people) or `json` (one object per line,
    for awslogs / FireLens; agent/logformat.py)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        from agent.logformat import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
