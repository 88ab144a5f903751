"""Self-metrics of the shared state backend (on the app's registry).

gatewatch_state_backend_up                      1 when the last round trip to Redis worked
gatewatch_state_errors_total{op}                failed operations: flush, read, claim, json, connect
gatewatch_state_queued_increments               (key, field) increments waiting for Redis (queue + in flight)
gatewatch_state_dropped_increments_total{reason} full | expired | invalid | rejected
gatewatch_state_flushed_increments_total        increments Redis acknowledged
gatewatch_state_flush_seconds                   one flush round trip (pipelined batches, plus reads)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

FLUSH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class StateMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.errors = Counter("gatewatch_state_errors", "Failed state backend operations by kind.", ["op"],
                              registry=registry)
        for op in ("flush", "read", "claim", "json", "connect"):
            self.errors.labels(op)  # exported as 0 before the first failure
        self.flush_seconds = Histogram("gatewatch_state_flush_seconds",
                                       "Duration of one flush round trip to the state backend.",
                                       buckets=FLUSH_BUCKETS, registry=registry)
        self.flushed = Counter("gatewatch_state_flushed_increments",
                               "Increments the state backend acknowledged.", registry=registry)
        self.up: Callable[[], float] = lambda: 0.0
        self.queued: Callable[[], float] = lambda: 0.0
        self.dropped: Callable[[], dict[str, float]] = dict
        if registry is not None:
            registry.register(_Collector(self))


class _Collector(Collector):
    def __init__(self, metrics: StateMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield GaugeMetricFamily("gatewatch_state_backend_up", "1 when the shared state backend (Redis) answers.",
                                value=m.up())
        yield GaugeMetricFamily("gatewatch_state_queued_increments",
                                "Increments waiting for the state backend (queued and in flight).", value=m.queued())
        dropped = CounterMetricFamily("gatewatch_state_dropped_increments",
                                      "Increments given up: queue full, past their deadline, not a number, or "
                                      "refused by Redis.", labels=["reason"])
        for reason, value in sorted(m.dropped().items()):
            dropped.add_metric([reason], value)
        yield dropped
