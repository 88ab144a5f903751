"""The bounded span queue and the thread that encodes and exports it.

The event loop only appends to a `deque` (bounded by count, drops counted by reason);
this thread wakes when a batch is full or the schedule delay passed, encodes, sends with
retries (exponential backoff with jitter, or the collector's Retry-After), and counts
what was exported, rejected or dropped. Blocking network calls happen only here, each
with a timeout, so a dead or hanging collector can fill the queue but never slow ingest.
At shutdown the queue is flushed until a deadline; what is left is counted as dropped.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from agent.events import Event
from agent.otel.encode import SpanEncoder
from agent.otel.transport import Sender

log = logging.getLogger(__name__)

MAX_RETRIES = 3
MAX_BACKOFF = 5.0


class ExportMetrics:
    """gatewatch_otel_* self-metrics, on the app's registry."""

    def __init__(self, registry: CollectorRegistry, queue_len: Callable[[], int]) -> None:
        self.exported = Counter("gatewatch_otel_spans_exported", "Spans the OTLP collector accepted.",
                                registry=registry)
        self.dropped = Counter(
            "gatewatch_otel_spans_dropped",
            "Spans not exported, by reason: queue_full (collector too slow or down), export_failed (gave up "
            "after retries), rejected (collector partial success), encode_error, shutdown (left at exit).",
            ["reason"], registry=registry)
        self.failures = Counter("gatewatch_otel_export_failures", "OTLP export requests that failed (each try).",
                                registry=registry)
        self.sampled_out = Counter("gatewatch_otel_spans_sampled_out",
                                   "Successful calls not exported because of the sampling rule.", registry=registry)
        self.metric_events_dropped = Counter(
            "gatewatch_otel_metric_events_dropped", "Calls not recorded in OTel metrics because the queue was full.",
            registry=registry)
        self.metric_export_failures = Counter("gatewatch_otel_metric_export_failures",
                                              "OTel metric exports that failed.", registry=registry)
        self.queue_size = Gauge("gatewatch_otel_queue_size", "Spans waiting for export.", registry=registry)
        self.queue_size.set_function(queue_len)
        for reason in ("queue_full", "export_failed", "rejected", "encode_error", "shutdown"):
            self.dropped.labels(reason)


@dataclass
class ExportStatus:
    """Last outcome, for /readyz detail and logs (no secrets: reasons are codes)."""

    exported: int = 0
    last_ok: float | None = None
    last_error: str = ""
    last_error_at: float | None = None
    consecutive_failures: int = 0


class BatchSpanProcessor:
    """What OpenTelemetry calls a batch span processor: queues finished spans, and one thread
    encodes them in batches (`batch_size`, every `schedule_delay`) and hands them to the
    OTLP sender (agent/otel/transport.py), which is the exporter proper."""

    def __init__(self, encoder: SpanEncoder, sender: Sender, metrics: ExportMetrics, *, batch_size: int,
                 schedule_delay: float, timeout: float, record: Callable[[Event], None] | None = None) -> None:
        self.encoder = encoder
        self.sender = sender
        self.metrics = metrics
        self.batch_size = batch_size
        self.schedule_delay = schedule_delay
        self.timeout = timeout
        self.spans: deque[Event] = deque()
        self.metric_events: deque[Event] = deque()
        self._record = record
        self.wake = threading.Event()
        self._stopping = threading.Event()
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self.status = ExportStatus()

    # -- lifecycle (event loop side) --------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gatewatch-otel-export", daemon=True)
        self._thread.start()

    def stop(self, deadline: float) -> None:
        """Flush until `deadline` (time.monotonic()), then stop (blocking: run in an executor)."""
        self._deadline = deadline
        self._stopping.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
            if self._thread.is_alive():
                log.warning("OTLP exporter did not stop by its shutdown deadline")
        left = len(self.spans)
        if left:
            self.spans.clear()
            self.metrics.dropped.labels("shutdown").inc(left)
            log.warning("OTLP exporter: %d spans dropped at shutdown (collector slow or down)", left)
        self.sender.close()

    # -- the thread -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            self.wake.wait(self.schedule_delay)
            self.wake.clear()
            try:
                self._drain()
            except Exception:  # the thread must survive anything a batch can do
                log.exception("OTLP export loop failed; continuing")
        try:
            self._drain()
        except Exception:
            log.exception("OTLP final flush failed")

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _drain(self) -> None:
        self._drain_metrics()
        spans = self.spans
        while spans:
            if self._stopping.is_set() and self._past_deadline():
                return
            batch = [spans.popleft() for _ in range(min(self.batch_size, len(spans)))]
            self._export(batch)
            self._drain_metrics()

    def _drain_metrics(self) -> None:
        if self._record is None:
            return
        queue, record = self.metric_events, self._record
        while queue:
            event = queue.popleft()
            try:
                record(event)
            except Exception:
                log.debug("OTel metric record failed", exc_info=True)

    def _export(self, batch: Sequence[Event]) -> None:
        errors_before = self.encoder.encode_errors
        requests = self.encoder.encode(batch)
        encode_errors = self.encoder.encode_errors - errors_before
        if encode_errors:
            self.metrics.dropped.labels("encode_error").inc(encode_errors)
        for body, count in requests:
            self._send(body, count)

    def _send(self, body: bytes, count: int) -> None:
        backoff = 0.5
        for attempt in range(MAX_RETRIES + 1):
            timeout = self.timeout
            if self._deadline is not None:
                timeout = max(0.05, min(timeout, self._deadline - time.monotonic()))
            result = self.sender.send(body, timeout)
            status = self.status
            if result.ok:
                accepted = count - result.rejected
                self.metrics.exported.inc(accepted)
                if result.rejected:
                    self.metrics.dropped.labels("rejected").inc(result.rejected)
                status.exported += accepted
                status.last_ok = time.time()
                status.consecutive_failures = 0
                return
            self.metrics.failures.inc()
            status.consecutive_failures += 1
            status.last_error, status.last_error_at = result.reason, time.time()
            if status.consecutive_failures in (1, 10, 100) or status.consecutive_failures % 1000 == 0:
                log.warning("OTLP export failed (%s), %d failures in a row", result.reason,
                            status.consecutive_failures)
            if not result.retryable or attempt == MAX_RETRIES or self._past_deadline():
                break
            wait = result.retry_after if result.retry_after is not None else backoff * (0.5 + random.random())
            wait = min(wait, MAX_BACKOFF)
            if self._deadline is not None:
                wait = min(wait, max(0.0, self._deadline - time.monotonic()))
            if self._stopping.wait(wait) and self._deadline is None:
                break
            backoff *= 2
        self.metrics.dropped.labels("export_failed").inc(count)
