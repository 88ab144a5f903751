"""CloudWatch metric export: per-interval aggregates as EMF lines or PutMetricData calls.

Teams on ECS already alarm and graph in CloudWatch; this sink gives them the same
per-model / deployment / account / region figures gatewatch exposes to Prometheus,
aggregated so the cost is per series and interval, never per request.

`handle` only folds events into the current interval (no I/O). Every `interval`, aligned
to the wall clock so one interval lands in one CloudWatch period, a task drains the
aggregator into batches and delivers them: EMF lines to stdout / a file / the CloudWatch
agent, or PutMetricData through boto3 in a dedicated thread. A batch that fails is kept
(bounded by `max_pending_batches`, oldest dropped and counted) and retried next interval;
`stop(deadline)` drains and delivers what is left in the time it is given.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge

from agent.configtypes import ConfigError
from agent.events import Event
from agent.sinks.cloudwatch_agg import Aggregator, Interval
from agent.sinks.cloudwatch_api import MetricBatch, PutMetricDataClient, batches, classify, error_summary
from agent.sinks.cloudwatch_emf import EmfWriter, emf_lines
from agent.sinks.config import CloudWatchConfig

if TYPE_CHECKING:
    from agent.config import Config
    from agent.selfmetrics import SelfMetrics

log = logging.getLogger(__name__)

EMF_LINES_PER_BATCH = 1000


class CloudWatchSelfMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.datapoints = Counter("gatewatch_cloudwatch_datapoints", "Metric values delivered to CloudWatch, by mode.",
                                  ["mode"], registry=registry)
        self.dropped = Counter("gatewatch_cloudwatch_dropped",
                               "Metric values given up on (pending_full, rejected, shutdown, error, invalid_event).",
                               ["reason"], registry=registry)
        self.put_failures = Counter("gatewatch_cloudwatch_put_failures",
                                    "Failed deliveries (a PutMetricData call or an EMF write) after retries.",
                                    registry=registry)
        self.pending = Gauge("gatewatch_cloudwatch_pending_batches", "Batches waiting to be delivered or retried.",
                             registry=registry)


class _EmfExporter:
    mode = "emf"

    def __init__(self, config: CloudWatchConfig) -> None:
        self.config = config
        self.writer = EmfWriter(config.emf_output, connect_timeout=float(config.timeout))

    async def start(self) -> None:
        return None

    def batches(self, interval: Interval) -> list[MetricBatch]:
        lines = list(emf_lines(interval, self.config.namespace, self.config.storage_resolution,
                               self.config.emf_distribution, max_bytes=self.writer.max_line_bytes))
        out = []
        for start in range(0, len(lines), EMF_LINES_PER_BATCH):
            part = lines[start : start + EMF_LINES_PER_BATCH]
            out.append(MetricBatch([line.text for line in part], sum(line.datapoints for line in part),
                             sum(len(line.text) + 1 for line in part)))
        return out

    async def send(self, batch: MetricBatch) -> None:
        await self.writer.write(batch.payload)

    def classify(self, exc: BaseException) -> str:
        return "retry" if isinstance(exc, (OSError, TimeoutError)) else "error"

    async def close(self) -> None:
        await self.writer.close()


class _ApiExporter:
    mode = "api"

    def __init__(self, config: CloudWatchConfig) -> None:
        self.config = config
        self.client = PutMetricDataClient(
            region=config.region, endpoint_url=config.endpoint_url, role_arn=config.role_arn,
            role_session_name=config.role_session_name, role_duration=int(config.role_duration),
            external_id=str(config.external_id) if config.external_id else None,
            sts_endpoint_url=config.sts_endpoint_url, max_attempts=config.max_attempts, timeout=float(config.timeout),
        )
        # one thread: calls stay ordered and never take the default executor's threads
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatewatch-cloudwatch")

    async def start(self) -> None:
        from botocore.exceptions import NoRegionError

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.client.build)
        except NoRegionError:
            raise ConfigError("cloudwatch.region", "no AWS region: set cloudwatch.region or AWS_REGION") from None
        except Exception as exc:  # no credentials yet: the first put retries building the client
            log.warning("cloudwatch: client not ready yet (%s); will retry at the first interval", error_summary(exc))

    def batches(self, interval: Interval) -> list[MetricBatch]:
        return batches(interval, self.config.storage_resolution)

    async def send(self, batch: MetricBatch) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.client.put, self.config.namespace, batch.payload)

    def classify(self, exc: BaseException) -> str:
        return classify(exc)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class CloudWatchSink:
    name = "cloudwatch"

    def __init__(self, config: CloudWatchConfig, registry: CollectorRegistry, self_metrics: SelfMetrics | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.metrics = CloudWatchSelfMetrics(registry)
        self.self_metrics = self_metrics
        self.clock = clock
        self.aggregator = Aggregator(config.dimensions, config.max_series)
        self.exporter: _EmfExporter | _ApiExporter = _ApiExporter(config) if config.mode == "api" \
            else _EmfExporter(config)
        self.pending: collections.deque[MetricBatch] = collections.deque()
        self.last_error = ""
        self.intervals = 0
        self._overflow_reported = 0
        self._window_start = self._align(clock())
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatewatch-cloudwatch-build")
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stopped = False

    # -- hot path -------------------------------------------------------------------
    def handle(self, events: Sequence[Event]) -> int:
        add = self.aggregator.add
        failed = 0
        for event in events:
            try:
                add(event)
            except (TypeError, ValueError, AttributeError):  # a malformed event: count, skip, go on
                self.metrics.dropped.labels("invalid_event").inc()
                failed += 1
        return failed

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        await self.exporter.start()
        self._window_start = self._align(self.clock())
        self._task = asyncio.create_task(self._run(), name="gatewatch-cloudwatch")
        log.info("cloudwatch: %s mode, namespace %s, every %.0fs, %d dimension sets%s", self.exporter.mode,
                 self.config.namespace, self.config.interval, len(self.config.dimensions),
                 f", output {self.exporter.writer.describe()}" if isinstance(self.exporter, _EmfExporter) else "")

    async def stop(self, deadline: float) -> None:
        """Close the last interval and deliver what is pending until `cloudwatch.shutdown_timeout` or
        `deadline`, whichever comes first; what is still undelivered then is counted as dropped."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task  # finishes a delivery in progress, never cut in half
        await self.flush(min(deadline, time.monotonic() + float(self.config.shutdown_timeout)))
        lost = sum(batch.datapoints for batch in self.pending)
        if lost:
            self.metrics.dropped.labels("shutdown").inc(lost)
            log.error("cloudwatch: %d batches (%d values) undelivered at shutdown: %s", len(self.pending), lost,
                      self.last_error or "timeout")
        self.pending.clear()
        self.metrics.pending.set(0)
        await self.exporter.close()
        self._builder.shutdown(wait=False)

    def _align(self, now: float) -> float:
        interval = float(self.config.interval)
        return math.floor(now / interval) * interval

    async def _run(self) -> None:
        while not self._stop.is_set():
            delay = max(0.0, self._window_start + float(self.config.interval) - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
            if self._stop.is_set():
                return
            try:
                async with self._lock:
                    await self._flush_locked()
            except Exception:  # the loop must survive anything one interval throws
                log.exception("cloudwatch: flush failed")

    async def flush(self, deadline: float) -> bool:
        """Close the current interval, queue its batches, and deliver what is pending until `deadline`
        (time.monotonic()); True when nothing is left pending. The interval is always closed and
        queued (local work), only delivery is cut off by the deadline: what is left stays pending."""
        async with self._lock:
            await self._close_interval()
            if self.pending and time.monotonic() < deadline:
                try:
                    async with asyncio.timeout(deadline - time.monotonic()):
                        await self._deliver()
                except TimeoutError:
                    log.error("cloudwatch: delivery cut off by its deadline; %d batches pending", len(self.pending))
            return not self.pending

    async def _flush_locked(self) -> None:
        await self._close_interval()
        await self._deliver()

    async def _close_interval(self) -> None:
        now = self.clock()
        taken = self.aggregator.take()
        timestamp = self._window_start
        if not self._stopped:
            self._window_start = max(self._align(now), self._window_start + float(self.config.interval))
        self._report_overflow()
        if taken[0]:
            # rolling up and serializing thousands of series takes a while: not on the event loop
            loop = asyncio.get_running_loop()
            built = await loop.run_in_executor(self._builder, self._build, taken, timestamp)
            self.intervals += 1
            self._enqueue(built)

    async def reload(self, config: Config) -> None:
        """Apply a changed `cloudwatch:` section without a restart (a reload hook).

        The interval in progress is closed and delivered under the old settings first. A new
        output (mode, destination, region, role) gets a new exporter; if it cannot start, the
        change is refused with ConfigError and the running exporter stays."""
        new = config.cloudwatch
        old = self.config
        if new == old or self._stopped:
            return
        if new.enabled != old.enabled:
            log.warning("cloudwatch: enabling or disabling the export takes effect at the next restart")
            new = replace(new, enabled=old.enabled)
        output_keys = ("mode", "emf_output", "region", "endpoint_url", "role_arn", "role_session_name",
                       "role_duration", "external_id", "sts_endpoint_url", "max_attempts", "timeout")
        exporter = None
        if any(getattr(new, k) != getattr(old, k) for k in output_keys):
            exporter = _ApiExporter(new) if new.mode == "api" else _EmfExporter(new)
            await exporter.start()  # raises ConfigError: refused, nothing changed
        async with self._lock:
            await self._flush_locked()
            if exporter is not None:
                if exporter.mode != self.exporter.mode and self.pending:
                    lost = sum(batch.datapoints for batch in self.pending)
                    self.metrics.dropped.labels("reconfigured").inc(lost)
                    log.warning("cloudwatch: mode changed, %d undelivered %s values dropped", lost,
                                self.exporter.mode)
                    self.pending.clear()
                    self.metrics.pending.set(0)
                old_exporter, self.exporter = self.exporter, exporter
                await old_exporter.close()
            if new.dimensions != old.dimensions or new.max_series != old.max_series:
                self.aggregator = Aggregator(new.dimensions, new.max_series)
                self._overflow_reported = 0
            self.config = new
            self._window_start = self._align(self.clock())
        log.info("cloudwatch: settings reloaded (%s mode, namespace %s)", self.exporter.mode, new.namespace)

    def _build(self, taken: tuple, timestamp: float) -> list[MetricBatch]:
        return self.exporter.batches(self.aggregator.rollup(taken, timestamp))

    def _report_overflow(self) -> None:
        overflowed = self.aggregator.overflowed - self._overflow_reported
        if overflowed and self.self_metrics is not None:
            self.self_metrics.series_overflow.labels("cloudwatch").inc(overflowed)
        self._overflow_reported = self.aggregator.overflowed

    def add_gauges(self, rows: list[tuple[dict[str, str], dict[str, float]]], timestamp: float) -> None:
        """Gauges computed elsewhere (Bedrock quota headroom): (dimensions, metric name -> value) rows,
        delivered with the next interval through the same output, queue and retries."""
        if rows and not self._stopped:
            self._enqueue(gauge_batches(rows, timestamp, self.config.namespace, self.exporter.mode,
                                        self.config.storage_resolution))

    def _enqueue(self, new: list[MetricBatch]) -> None:
        self.pending.extend(new)
        while len(self.pending) > self.config.max_pending_batches:
            oldest = self.pending.popleft()
            self.metrics.dropped.labels("pending_full").inc(oldest.datapoints)
            log.warning("cloudwatch: pending queue full, dropped a batch of %d values", oldest.datapoints)
        self.metrics.pending.set(len(self.pending))

    async def _deliver(self) -> None:
        while self.pending:
            batch = self.pending[0]
            batch.attempts += 1
            try:
                await self.exporter.send(batch)
            except Exception as exc:
                self.metrics.put_failures.inc()
                self.last_error = error_summary(exc)
                reason = self.exporter.classify(exc)
                if reason != "retry":
                    self.pending.popleft()
                    self.metrics.dropped.labels(reason).inc(batch.datapoints)
                    log.error("cloudwatch: batch of %d values %s: %s", batch.datapoints, reason, self.last_error)
                    continue
                log.warning("cloudwatch: delivery failed (attempt %d), %d batches kept for the next interval: %s",
                            batch.attempts, len(self.pending), self.last_error)
                break
            else:
                self.pending.popleft()
                self.metrics.datapoints.labels(self.exporter.mode).inc(batch.datapoints)
            finally:
                self.metrics.pending.set(len(self.pending))

    def readiness(self) -> tuple[bool, str]:
        """Informational: CloudWatch trouble must not take the sidecar out of service."""
        if self.pending and self.last_error:
            return True, f"{len(self.pending)} batches pending; last error {self.last_error}"
        return True, f"{self.exporter.mode}: {self.intervals} intervals exported"


def gauge_batches(rows: list[tuple[dict[str, str], dict[str, float]]], timestamp: float, namespace: str, mode: str,
                  storage_resolution: int = 60) -> list[MetricBatch]:
    """Gauge rows -> one MetricBatch: EMF lines (one per row) or PutMetricData datums (under the call limits)."""
    import datetime as dt
    import json

    if mode == "emf":
        lines = []
        for dims, values in rows:
            doc: dict[str, object] = {"_aws": {"Timestamp": int(timestamp * 1000), "CloudWatchMetrics": [{
                "Namespace": namespace, "Dimensions": [list(dims)],
                "Metrics": [{"Name": name, "Unit": "None", "StorageResolution": storage_resolution}
                            for name in values]}]}}
            doc.update(dims)
            doc.update(values)
            lines.append(json.dumps(doc, separators=(",", ":")))
        return [MetricBatch(lines, sum(len(v) for _, v in rows), sum(len(line) + 1 for line in lines))]
    stamp = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    datums = [{"MetricName": name, "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
               "Timestamp": stamp, "Unit": "None", "StorageResolution": storage_resolution, "Value": float(value)}
              for dims, values in rows for name, value in values.items()]
    return [MetricBatch(datums[i:i + 500], len(datums[i:i + 500])) for i in range(0, len(datums), 500)]


def describe(config: CloudWatchConfig) -> str:
    if config.mode == "emf":
        target = f"EMF to {config.emf_output}"
    else:
        target = f"PutMetricData in {config.region or 'AWS_REGION'}" + (f" as {config.role_arn}"
                                                                        if config.role_arn else "")
    sets = "; ".join(",".join(dims) or "(none)" for dims in config.dimensions)
    return (f"cloudwatch: {target}, namespace {config.namespace}, every {config.interval:g}s, "
            f"dimension sets {sets}")


__all__ = ["CloudWatchSink"]
