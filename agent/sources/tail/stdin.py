"""The "-" log source: lines on standard input, for gatewatch behind a log router.

No checkpoint (a pipe cannot be re-read); back-pressure is the pipe itself: while the
queue is full this thread does not read, the pipe fills and the writer blocks.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

from agent.parse.logs import LogParser
from agent.sources.tail.config import TailConfig
from agent.sources.tail.splitter import LineSplitter
from agent.sources.tail.watcher import TailBatch, TailStats


class StdinReader:
    def __init__(self, emit: Callable[[TailBatch], None], settings: TailConfig, parser: LogParser | None = None,
                 fd: int = 0) -> None:
        self.emit = emit
        self.settings = settings
        self.parser = parser or LogParser()
        self.fd = fd
        self.stats = TailStats()
        self.stop_event = threading.Event()
        self.eof = False

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        splitter = LineSplitter(self.settings.max_line_bytes)
        batch = TailBatch()
        while not self.stop_event.is_set():
            try:
                ready, _, _ = select.select([self.fd], [], [], self.settings.poll_interval)
            except (OSError, ValueError):
                break
            if not ready:
                batch = self._send(batch)
                continue
            try:
                data = os.read(self.fd, 256 * 1024)
            except OSError:
                break
            if not data:
                self.eof = True
                lines, cut = splitter.flush()
                self._add(batch, lines, cut, 0)
                break
            lines, cut = splitter.feed(data)
            self._add(batch, lines, cut, len(data))
            if batch.lines >= self.settings.batch_lines:
                batch = self._send(batch)
        self._send(batch)

    def _add(self, batch: TailBatch, lines: list[bytes], cut: int, nbytes: int) -> None:
        if lines:
            batch.events.extend(self.parser.parse_many(lines))
            batch.lines += len(lines)
            self.stats.lines += len(lines)
        self.stats.truncated_lines += cut
        batch.nbytes += nbytes

    def _send(self, batch: TailBatch) -> TailBatch:
        if batch.lines:
            self.emit(batch)
            return TailBatch()
        return batch
