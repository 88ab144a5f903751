"""OpenTelemetry sink: one CLIENT span per LLM call attempt, exported over OTLP.

`handle()` runs on the event loop for every batch, so it only filters (attempts, not
outcomes; no health checks unless asked), applies the tail sampling rule and appends to
a bounded queue, counting what it drops. Encoding and network I/O happen on the
batch span processor thread (agent/otel/processor.py). Optional OTel metrics ride the same thread.

Enabled by `otel.enabled: true`, or by default when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; OpenTelemetry's env vars configure it, keys
in the config file win.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry

from agent.events import Event, Kind
from agent.otel.config import Settings
from agent.otel.encode import SpanEncoder
from agent.otel.processor import BatchSpanProcessor, ExportMetrics
from agent.otel.resource import detect
from agent.otel.sampler import TailSampler
from agent.otel.transport import make_sender

if TYPE_CHECKING:
    from agent.otel.metrics import GenAiMetrics

__all__ = ["OtelSink"]

log = logging.getLogger(__name__)


class OtelSink:
    name = "otel"

    def __init__(self, settings: Settings, registry: CollectorRegistry,
                 resource_attributes: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.sampler = TailSampler(settings.sampler, settings.ratio, settings.keep_errors,
                                   settings.keep_slower_than)
        self._fixed_resource = dict(resource_attributes) if resource_attributes is not None else None
        self.resource_attributes: dict[str, str] = {}
        self.exporter: BatchSpanProcessor | None = None
        self.genai_metrics: GenAiMetrics | None = None
        # before start() these are plain lists; start() hands them to the exporter's deques
        self._spans: deque[Event] | list[Event] = []
        self._metric_events: deque[Event] | list[Event] = []
        self.metrics = ExportMetrics(registry, lambda: len(self._spans))

    # -- ingest path (event loop) -----------------------------------------------------
    def handle(self, events: Sequence[Event]) -> None:
        settings = self.settings
        include_health = settings.include_health_checks
        traces, metrics_on = settings.traces, settings.metrics
        sampler = self.sampler
        keep_all = sampler.keeps_everything
        keep = sampler.keep
        queue, metric_queue = self._spans, self._metric_events
        limit = settings.queue_size
        dropped = sampled_out = metric_dropped = 0
        for event in events:
            if event.kind != Kind.REQUEST or (event.health_check and not include_health) \
                    or event.call_type.startswith("/"):  # a refused proxy route, not a model call
                continue
            if metrics_on:
                if len(metric_queue) < limit:
                    metric_queue.append(event)
                else:
                    metric_dropped += 1
            if not traces:
                continue
            if not keep_all and not keep(event):
                sampled_out += 1
                continue
            if len(queue) >= limit:
                dropped += 1
                continue
            queue.append(event)
        if dropped:
            self.metrics.dropped.labels("queue_full").inc(dropped)
        if sampled_out:
            self.metrics.sampled_out.inc(sampled_out)
        if metric_dropped:
            self.metrics.metric_events_dropped.inc(metric_dropped)
        exporter = self.exporter
        if exporter is not None and len(queue) >= exporter.batch_size and not exporter.wake.is_set():
            exporter.wake.set()

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        settings = self.settings
        if self._fixed_resource is not None:
            self.resource_attributes = self._fixed_resource
        else:
            self.resource_attributes = await detect(settings.service_name, dict(settings.resource_attributes),
                                                    settings.proxy_container)
        record = None
        if settings.metrics:
            from agent.otel.metrics import GenAiMetrics

            self.genai_metrics = GenAiMetrics(settings.metrics_endpoint, settings.metrics_interval,
                                              self.resource_attributes, self.metrics.metric_export_failures.inc)
            record = self.genai_metrics.record
        encoder = SpanEncoder(
            self.resource_attributes,
            capture_content=settings.capture_content,
            max_content_bytes=settings.max_content_bytes,
            record_error_message=settings.record_error_message,
            max_request_bytes=settings.max_request_bytes,
        )
        endpoint = settings.traces_endpoint
        exporter = BatchSpanProcessor(encoder, make_sender(endpoint), self.metrics, batch_size=settings.batch_size,
                                schedule_delay=settings.schedule_delay, timeout=endpoint.timeout, record=record)
        exporter.spans.extend(self._spans)
        exporter.metric_events.extend(self._metric_events if settings.metrics else ())
        self._spans, self._metric_events = exporter.spans, exporter.metric_events
        self.exporter = exporter
        exporter.start()
        where = _safe_url(endpoint.url) if endpoint.protocol != "grpc" else endpoint.target
        log.info("OTLP export to %s (%s)%s; sampler %s ratio %.3g, keep errors %s, keep slower than %s; content %s",
                 where, endpoint.protocol, " + OTel metrics" if settings.metrics else "", settings.sampler,
                 settings.ratio, settings.keep_errors, settings.keep_slower_than,
                 "captured" if settings.capture_content else "not exported")

    async def stop(self, deadline: float) -> None:
        """Force-flush spans, then metrics, each until `otel.shutdown_timeout` or `deadline`, whichever
        comes first."""
        exporter = self.exporter
        if exporter is None:
            return
        timeout = float(self.settings.shutdown_timeout)
        await asyncio.to_thread(exporter.stop, min(deadline, time.monotonic() + timeout))
        if self.genai_metrics is not None:
            await asyncio.to_thread(self.genai_metrics.stop, min(deadline, time.monotonic() + timeout))

    def readiness(self) -> tuple[bool, str]:
        """Always ready (a down collector must not take the proxy's sidecar out of service); the
        detail says how export is going."""
        exporter = self.exporter
        if exporter is None:
            return True, "not started"
        status = exporter.status
        if status.consecutive_failures:
            ago = time.time() - (status.last_error_at or time.time())
            return True, f"export failing ({status.last_error}, {status.consecutive_failures} in a row, {ago:.0f}s ago)"
        return True, f"{status.exported} spans exported, queue {len(exporter.spans)}"

    def apply_sampling(self, settings: Settings) -> None:
        """Take what can change without a restart: the sampling rule."""
        self.sampler = TailSampler(settings.sampler, settings.ratio, settings.keep_errors, settings.keep_slower_than)


def _safe_url(url: str) -> str:
    """The URL without user:password@ and query (either may hold a credential), for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


