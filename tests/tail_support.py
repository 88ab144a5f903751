"""Helpers for the log-tail tests: recording parser, waiting, fixture lines."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from agent.events import Event, Kind
from agent.parse.logs import LogParser
from tests.conftest import FIXTURES

SEQ_RE = re.compile(rb'"seq": (\d+)|#seq=(\d+)')


def fixture_lines() -> list[bytes]:
    """Every captured JSON log line, in file order."""
    lines: list[bytes] = []
    for path in sorted(FIXTURES.glob("logs_*.jsonl")):
        lines.extend(line for line in path.read_bytes().splitlines() if line.strip())
    return lines


class RecordingParser(LogParser):
    """The real parser, plus a record of every line it was given and a SELF event per
    numbered line, so a test can follow each line through queue, pipeline and restart."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.seen: list[bytes] = []
        self._lock = threading.Lock()

    def parse_many(self, lines: list[bytes]) -> list[Event]:
        with self._lock:
            self.seen.extend(lines)
        events = super().parse_many(lines)
        for line in lines:
            match = SEQ_RE.search(line)
            if match:
                events.append(Event(kind=Kind.SELF, time=0.0, source="test",
                                    value=float(match.group(1) or match.group(2))))
        return events


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


async def async_wait_until(predicate: Callable[[], bool], within: float = 20.0, interval: float = 0.02) -> None:
    import asyncio

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within}s")
