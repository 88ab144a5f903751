"""The log-tail component: reader threads -> bounded queue -> pipeline, then checkpoint.

File reading and line parsing run in a thread (reads block, parsing is CPU), and hand
parsed batches to the event loop through a bounded asyncio queue. When the queue is full
the thread waits: reading pauses, nothing is dropped (the unread bytes are the lag). The
loop publishes each batch into the pipeline, then marks its offsets as processed; the
checkpoint written to the state directory only ever holds processed offsets, so a clean
restart neither loses nor repeats a line (a crash repeats at most `checkpoint_interval`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from agent.events import Event
from agent.parse.logs import DeploymentLookup, LogParser
from agent.sources.tail.checkpoint import Checkpoints
from agent.sources.tail.config import TailConfig
from agent.sources.tail.metrics import TailMetrics
from agent.sources.tail.stdin import StdinReader
from agent.sources.tail.watcher import TailBatch, Tailer

log = logging.getLogger(__name__)

STDIN = "-"


class TailSource:
    name = "logtail"

    def __init__(self, patterns: Sequence[str], settings: TailConfig, state_dir: str,
                 publish: Callable[[list[Event]], None], registry: CollectorRegistry,
                 on_received: Callable[[int], None] | None = None, lookup: DeploymentLookup | None = None,
                 stdin_fd: int = 0, stop_timeout: float = 10.0,
                 parser_factory: Callable[[], LogParser] | None = None) -> None:
        self.patterns = [p for p in patterns if p != STDIN]
        self.use_stdin = STDIN in patterns
        self.settings = settings
        self.checkpoints = Checkpoints(state_dir)
        self.publish = publish
        self.on_received = on_received
        self.lookup = lookup
        self.stdin_fd = stdin_fd
        self.stop_timeout = stop_timeout
        self.parser_factory = parser_factory or (lambda: LogParser(lookup=self.lookup))
        self.metrics = TailMetrics(registry)
        self.metrics.bind(self.lag_bytes, self.checkpoint_age)
        self.tailer: Tailer | None = None
        self.stdin: StdinReader | None = None
        self.committed: dict[str, tuple[str, int]] = {}
        self.published_lines = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[TailBatch | None] | None = None
        self._threads: list[threading.Thread] = []
        self._consumer: asyncio.Task[None] | None = None
        self._queued_bytes = 0
        self._queued_lock = threading.Lock()
        self._waited = 0.0  # seconds reader threads spent handing batches over
        self._waited_seen = 0.0
        self._abandon = False
        self._dirty = False
        self._started_at = time.time()
        self._last_checkpoint: float | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=self.settings.queue_batches)
        entries = await loop.run_in_executor(None, self.checkpoints.load)
        if entries is None and self.patterns:
            # mark the state directory as "gatewatch ran here": after a restart, files that are
            # new to us are read from their start even when read_from is "end"
            await loop.run_in_executor(None, self.checkpoints.save, {})
        if self.patterns:
            self.tailer = Tailer(self.patterns, self.settings, entries, self._emit, self.parser_factory())
            self._spawn("gatewatch-tail", self.tailer.run)
        if self.use_stdin:
            self.stdin = StdinReader(self._emit, self.settings, self.parser_factory(), fd=self.stdin_fd)
            self._spawn("gatewatch-tail-stdin", self.stdin.run)
        self._consumer = asyncio.create_task(self._consume(len(self._threads)), name="gatewatch-tail-consumer")
        log.info("tailing %s%s", ", ".join(self.patterns) or "-", " and stdin" if self.patterns and self.use_stdin
                 else "")

    async def stop(self, deadline: float) -> None:
        """Stop the readers and let the consumer finish what they read (until `stop_timeout`, and
        leaving a second of `deadline` for the checkpoint), then save the offsets."""
        if self.tailer is not None:
            self.tailer.stop()
        if self.stdin is not None:
            self.stdin.stop()
        if self._consumer is not None:
            wait = max(0.0, min(float(self.stop_timeout), deadline - time.monotonic() - 1.0))
            try:
                await asyncio.wait_for(asyncio.shield(self._consumer), timeout=wait)
            except TimeoutError:
                log.error("log tail did not stop within %.0fs; saving the offsets processed so far", wait)
                self._abandon = True
                self._consumer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._consumer
        await self._checkpoint(force=True)

    def healthy(self) -> tuple[bool, str]:
        alive = [t for t in self._threads if t.is_alive()]
        files = len(self.tailer.files) if self.tailer else 0
        detail = f"{files} files, lag {self.lag_bytes():.0f} bytes"
        if self.stdin is not None and self.stdin.eof:
            detail += ", stdin closed"
            return len(alive) == len(self._threads) - 1, detail
        return len(alive) == len(self._threads), detail

    # -- reader threads ----------------------------------------------------------------
    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        def run() -> None:
            try:
                target()
            except Exception:
                log.exception("%s stopped on an error", name)
            finally:
                self._emit(None)

        thread = threading.Thread(target=run, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _emit(self, batch: TailBatch | None) -> None:
        """Hand a batch to the loop; blocks while the queue is full (called from reader threads)."""
        loop, queue = self._loop, self._queue
        if loop is None or queue is None or self._abandon:
            return
        if batch is not None:
            with self._queued_lock:
                self._queued_bytes += batch.nbytes
        started = time.monotonic()
        try:
            future = asyncio.run_coroutine_threadsafe(self._put(queue, batch), loop)
        except RuntimeError:  # loop closed
            return
        try:
            while True:
                try:
                    future.result(timeout=0.5)
                    return
                except concurrent.futures.TimeoutError:
                    if self._abandon or loop.is_closed():
                        future.cancel()
                        return
        finally:
            with self._queued_lock:
                self._waited += time.monotonic() - started

    async def _put(self, queue: asyncio.Queue[TailBatch | None], batch: TailBatch | None) -> None:
        if queue.full():
            self.metrics.paused.inc()  # the reader now waits for the pipeline: back-pressure
        await queue.put(batch)

    # -- the loop side -----------------------------------------------------------------
    async def _consume(self, producers: int) -> None:
        assert self._queue is not None
        while producers:
            batch = await self._queue.get()
            if batch is None:
                producers -= 1
                continue
            self._apply(batch)
            await self._checkpoint()
            await asyncio.sleep(0)  # let HTTP handlers and timers run between batches

    def _apply(self, batch: TailBatch) -> None:
        if batch.events:
            self.publish(batch.events)
            if self.on_received is not None:
                self.on_received(len(batch.events))
        self.published_lines += batch.lines
        with self._queued_lock:
            self._queued_bytes -= batch.nbytes
        if batch.offsets or batch.forget:
            self.committed.update(batch.offsets)
            for key in batch.forget:
                self.committed.pop(key, None)
            self._dirty = True
        if self.tailer is not None:
            self.metrics.sync("files", self.tailer.stats, self.tailer.parser.unparsed)
            self.metrics.files.set(self.tailer.stats.files)
        if self.stdin is not None:
            self.metrics.sync("stdin", self.stdin.stats, self.stdin.parser.unparsed)
        with self._queued_lock:
            waited, self._waited_seen = self._waited - self._waited_seen, self._waited
        if waited > 0:
            self.metrics.wait_seconds.inc(waited)

    async def _checkpoint(self, force: bool = False) -> None:
        if self.tailer is None or not self._dirty:
            return
        now = time.time()
        if not force and self._last_checkpoint is not None and now - self._last_checkpoint < \
                self.settings.checkpoint_interval:
            return
        entries: dict[str, dict[str, Any]] = {key: {"path": path, "offset": offset}
                                              for key, (path, offset) in self.committed.items()}
        self._dirty = False
        self._last_checkpoint = now
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.checkpoints.save, entries)
        except OSError as exc:
            self._dirty = True
            log.warning("cannot write the tail checkpoint %s: %s", self.checkpoints.path, exc.strerror)

    # -- gauges --------------------------------------------------------------------------
    def lag_bytes(self) -> float:
        lag = self.tailer.lag_bytes() if self.tailer is not None else 0
        return float(lag + max(self._queued_bytes, 0))

    def checkpoint_age(self) -> float:
        written = self.checkpoints.written_at or self._started_at
        return max(0.0, time.time() - written)
