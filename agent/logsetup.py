"""Logging setup: one handler on stderr, text or JSON, behind the redacting filter
(agent/redact.py) as a last line of defence against secrets in log lines.
"""

from __future__ import annotations

import logging
import sys

from agent.logformat import JsonFormatter
from agent.redact import RedactingFilter


def configure(level: str = "info", fmt: str = "text") -> None:
    """Root logging to stderr: `fmt` is `text` (for people) or `json` (one object per line,
    for awslogs / FireLens; agent/logformat.py)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
