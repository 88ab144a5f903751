"""Offline replay: captured callback bodies and JSON log files through the pipeline.

Accepts the shapes users actually have on disk: a raw generic_api body (JSON array,
object or NDJSON), a capture wrapper `{"path": ..., "body_json": ...}` like the ones in
the fixtures, a LiteLLM alert body, and proxy JSON log files (one line each).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.events import Event
from agent.parse.litellm import BodyError, decode_body
from agent.parse.webhook import AlertBodyError, alert_to_event

ALERT_PATH_MARKERS = ("alert", "webhook")


@dataclass
class ReplayStats:
    files: int = 0
    events: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str, n: int = 1) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + n


def _looks_like_payload(obj: Any) -> bool:
    return isinstance(obj, dict) and "startTime" in obj and "status" in obj


def events_from_file(path: Path, stats: ReplayStats, log_parser: Any = None) -> Iterable[list[Event]]:
    """Yield batches of events from one file."""
    raw = path.read_bytes()
    stats.files += 1
    stripped = raw.lstrip()
    whole: Any = None
    if stripped[:1] in (b"[", b"{"):
        try:
            whole = json.loads(raw)
        except ValueError:
            whole = None
    if isinstance(whole, dict) and ("body_json" in whole or "body_text" in whole):
        yield from _capture_wrapper(whole, stats)
        return
    if whole is not None:
        if isinstance(whole, list) or _looks_like_payload(whole):
            yield from _callback_body(raw, stats)
            return
        if isinstance(whole, dict):
            yield from _alert_items([whole], stats)
            return
    yield from _lines(raw, stats, log_parser)


def _capture_wrapper(capture: dict[str, Any], stats: ReplayStats) -> Iterable[list[Event]]:
    route = str(capture.get("path") or "")
    body = capture.get("body_json")
    if any(marker in route for marker in ALERT_PATH_MARKERS):
        items = body if isinstance(body, list) else [body]
        yield from _alert_items(items, stats)
        return
    text = capture.get("body_text")
    raw = text.encode() if isinstance(text, str) and text else json.dumps(body).encode()
    yield from _callback_body(raw, stats)


def _callback_body(raw: bytes, stats: ReplayStats) -> Iterable[list[Event]]:
    try:
        batch = decode_body(raw)
    except BodyError:
        stats.reject("invalid_body")
        return
    for reason, n in batch.rejected.items():
        stats.reject(reason, n)
    stats.events += len(batch.events)
    if batch.events:
        yield batch.events


def _alert_items(items: list[Any], stats: ReplayStats) -> Iterable[list[Event]]:
    events = []
    for item in items:
        try:
            events.append(alert_to_event(item))
        except AlertBodyError:
            stats.reject("unknown_alert")
    stats.events += len(events)
    if events:
        yield events


def _lines(raw: bytes, stats: ReplayStats, log_parser: Any) -> Iterable[list[Event]]:
    batch: list[Event] = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        if line.lstrip()[:1] == b"{":
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if _looks_like_payload(obj):
                yield from _callback_body(line, stats)
                continue
        if log_parser is None:
            stats.reject("log_line_without_parser")
            continue
        events = log_parser.parse(line.decode("utf-8", "replace"))
        stats.events += len(events)
        batch.extend(events)
        if len(batch) >= 1000:
            yield batch
            batch = []
    if batch:
        yield batch


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal and input is large."""

    def __init__(self, total_bytes: int, enabled: bool | None = None) -> None:
        self.total = max(total_bytes, 1)
        self.done = 0
        self.enabled = (sys.stderr.isatty() and total_bytes > 5_000_000) if enabled is None else enabled

    def advance(self, n: int, label: str) -> None:
        self.done += n
        if self.enabled:
            width = 30
            filled = int(width * self.done / self.total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {100 * self.done // self.total:3d}% "
                             f"{label[:40]:<40}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
