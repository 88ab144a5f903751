"""Rate-limit reset headers: how long a remaining/limit reading stays true (issue 18)."""

from __future__ import annotations

import json

import pytest

from agent.parse.litellm import decode_body
from agent.parse.ratelimit import reset_seconds
from tests.conftest import capture_items


@pytest.mark.parametrize(("value", "expected"), [
    ("20s", 20.0), ("1s", 1.0), ("6ms", 0.006), ("1m30s", 90.0), ("2h", 7200.0), ("1.5s", 1.5),
    (12, 12.0), ("12", 12.0), ("0", 0.0),
    (1_000_000_100, 100.0),  # an epoch timestamp: seconds from now
    ("Thu, 01 Jan 1970 00:00:10 GMT", 10.0),  # an HTTP date
])
def test_reset_header_forms(value, expected):
    assert reset_seconds(value, now=1_000_000_000 if isinstance(value, int) and value > 1e9 else 0.0) \
        == pytest.approx(expected)


@pytest.mark.parametrize("value", [None, "", "soon", "-5", True, "1s garbage", float("nan")])
def test_unreadable_reset_headers_are_none(value):
    assert reset_seconds(value, now=0.0) is None


def _events(name):
    return decode_body(json.dumps(capture_items(name)).encode()).events


def test_a_429_reading_is_good_for_its_reset_time_only():
    """The captured 429: 0 remaining, `x_ratelimit_reset_requests: 20s`. LiteLLM 1.108.7 passes no
    reset header on successes: their readings live `rule_engine.header_max_age`."""
    failed = [e for e in _events("generic_api_upstream_429.json") if e.remaining_requests == 0]
    assert failed and all(e.reset_requests == 20.0 and e.reset_tokens == 20.0 for e in failed)
    ok = [e for e in _events("generic_api_success.json") if e.remaining_requests]
    assert ok and all(e.reset_requests is None and e.reset_tokens is None for e in ok)
