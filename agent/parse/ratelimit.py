"""Provider rate-limit reset headers -> seconds until the reading expires.

LiteLLM copies the provider's `x-ratelimit-reset-requests` / `-tokens` into the payload's
`hidden_params.additional_headers` as `x_ratelimit_reset_*`. Providers spell them
differently: OpenAI a Go duration ("1s", "6ms", "1m30s", "20s"), others a number of seconds,
an epoch timestamp, or an HTTP date. A remaining/limit reading is only true until its
window resets, so the rules need this to ignore readings that have gone stale.
"""

from __future__ import annotations

import math
import re
from email.utils import parsedate_to_datetime
from typing import Any

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
EPOCH_AFTER = 1e9  # a bare number this large is a timestamp, not a duration


def reset_seconds(value: Any, now: float) -> float | None:
    """Seconds from `now` until the reset the header names; None when absent or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an integer past 1e308: no reset anyone can mean
            return None
    else:
        text = str(value).strip()
        if not text:
            return None
        try:
            number = float(text)
        except ValueError:
            return _duration(text) if _DURATION_RE.match(text) else _http_date(text, now)
    if not math.isfinite(number) or number < 0:
        return None
    if number >= EPOCH_AFTER:
        return max(0.0, number - now)
    return number


def _duration(text: str) -> float | None:
    total, pos = 0.0, 0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and math.isfinite(total) else None


def _http_date(text: str, now: float) -> float | None:
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
