"""gatewatch's own log lines as JSON, one object per line (`log_format: json`).

On ECS the container's stderr goes to CloudWatch Logs (awslogs) or through FireLens to
Fluent Bit; both index JSON lines by field, so `level = "ERROR" and receiver = "oncall"`
becomes a query instead of a regex. Each line has `timestamp` (ISO 8601, UTC, ms),
`level`, `logger` and `message`, then every context field a component passed with
`extra=` (rule, receiver, deployment, …), and `exception` with the traceback when there
is one. Values that are not JSON types are written as strings. Registered secrets are
masked in the message and in string context fields, as in text lines.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from agent.redact import redact

# attributes every LogRecord has: anything else on a record came from `extra=`
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; the handler adds the newline."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in line:
                line[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)
