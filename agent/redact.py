"""Secret values that must never reach a log line, and the filter that masks them.

Components should never log a secret in the first place; the redacting filter masks any
registered secret value (tokens, webhook URLs) that slips into a message anyway. A leaf:
the log set-up (agent/logsetup.py) and the JSON formatter (agent/logformat.py) both use it.
"""

from __future__ import annotations

import logging
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
