"""Trace and span ids for LiteLLM calls, derived deterministically.

LiteLLM gives every attempt of one proxy request the same `trace_id` (a UUID) and
`litellm_call_id`. The UUID's 128 bits become the OTel trace id as they are, so the
failed attempt and the retry/fallback that recovered it land in one trace, on any task
and after a replay. A W3C `traceparent` the proxy propagated wins: the span then joins
the caller's trace as a child of the caller's span. Span ids are a hash of what makes an
attempt unique, so a re-sent batch produces the same span ids instead of duplicates.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import uuid
from typing import NamedTuple

from agent.events import Event

_TRACEPARENT_RE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$")
_ZERO_TRACE = b"\0" * 16
_ZERO_SPAN = b"\0" * 8
_TIMES = struct.Struct("<dd")


class Parent(NamedTuple):
    trace_id: bytes
    span_id: bytes
    sampled: bool


def parse_traceparent(value: str) -> Parent | None:
    """W3C trace-context `traceparent`, or None when absent or invalid (then it is ignored)."""
    if not value:
        return None
    match = _TRACEPARENT_RE.match(value.strip().lower())
    if match is None or match.group(1) == "ff":
        return None
    trace_id = bytes.fromhex(match.group(2))
    span_id = bytes.fromhex(match.group(3))
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return Parent(trace_id, span_id, bool(int(match.group(4), 16) & 0x01))


def _uuid_bytes(text: str) -> bytes | None:
    if len(text) == 36 and text[8] == "-":  # the canonical form LiteLLM sends: skip uuid.UUID's parsing
        try:
            return bytes.fromhex(text.replace("-", ""))
        except ValueError:
            return None
    try:
        return uuid.UUID(text).bytes
    except ValueError:
        return None


def trace_id_for(event: Event, parent: Parent | None = None) -> bytes:
    """16 bytes: the propagated parent's, else LiteLLM's trace_id UUID, else a hash of the call id."""
    if parent is not None:
        return parent.trace_id
    if event.trace_id:
        value = _uuid_bytes(event.trace_id)
        if value is None:
            value = hashlib.blake2b(event.trace_id.encode(), digest_size=16).digest()
        if value != _ZERO_TRACE:
            return value
    if event.call_id:
        return hashlib.blake2b(event.call_id.encode(), digest_size=16).digest()
    return os.urandom(16)


def span_id_for(event: Event) -> bytes:
    """8 bytes, stable for one attempt: call id + trace id + status + deployment + start + end."""
    if not (event.call_id or event.trace_id):
        return os.urandom(8)
    key = f"{event.call_id}|{event.trace_id}|{event.status}|{event.deployment}".encode()
    key += _TIMES.pack(event.start_time or 0.0, event.time)
    value = hashlib.blake2b(key, digest_size=8).digest()
    return value if value != _ZERO_SPAN else b"\0" * 7 + b"\1"


def ratio_position(trace_id: bytes) -> float:
    """Where a trace id falls in [0, 1) for ratio sampling: its rightmost 56 bits (W3C level 2
    randomness), the same bits OTel's TraceIdRatioBased sampler uses."""
    return int.from_bytes(trace_id[9:], "big") / float(1 << 56)
