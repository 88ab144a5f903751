"""Self-metrics of alert delivery (names are fixed: the dashboards use them).

gatewatch_notifications_total{receiver,outcome}  sent | retry | rate_limited | dead | deduplicated | dropped
                                                 | taken_over (another sidecar's claim expired undelivered)
gatewatch_outbox_depth, gatewatch_outbox_oldest_age_seconds
gatewatch_dead_letters (rows now), gatewatch_dead_letters_total (rows moved there since start)

`gatewatch_dead_letters` (gauge) and `gatewatch_dead_letters_total` (counter) share a
stem, which prometheus_client's typed Counter cannot express next to a Gauge without a
duplicate `# TYPE` line; a custom collector exposes the total as an untyped series, which
Prometheus ingests and `rate()` handles like a counter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric, UnknownMetricFamily
from prometheus_client.registry import Collector

SEND_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _OutboxCollector(Collector):
    def __init__(self, metrics: NotifyMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("gatewatch_outbox_depth", "Notifications waiting in the outbox.")
        yield GaugeMetricFamily("gatewatch_outbox_oldest_age_seconds", "Age of the oldest waiting notification.")
        yield GaugeMetricFamily("gatewatch_dead_letters", "Notifications in the dead-letter table now.")
        yield UnknownMetricFamily("gatewatch_dead_letters_total", "Notifications moved to the dead letters.")
        yield GaugeMetricFamily("gatewatch_silences_active", "Silences in effect now.")
        yield GaugeMetricFamily("gatewatch_alert_groups", "Alert groups the router holds.")

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield GaugeMetricFamily("gatewatch_outbox_depth", "Notifications waiting in the outbox.", value=m.depth())
        yield GaugeMetricFamily("gatewatch_outbox_oldest_age_seconds", "Age of the oldest waiting notification.",
                                value=m.oldest_age())
        yield GaugeMetricFamily("gatewatch_dead_letters", "Notifications in the dead-letter table now.",
                                value=m.dead_now())
        yield UnknownMetricFamily("gatewatch_dead_letters_total", "Notifications moved to the dead letters.",
                                  value=m.dead_letters_total)
        yield GaugeMetricFamily("gatewatch_silences_active", "Silences in effect now.", value=m.silences())
        yield GaugeMetricFamily("gatewatch_alert_groups", "Alert groups the router holds.", value=m.groups())


def _zero() -> float:
    return 0.0


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "gatewatch_notifications", "Notification deliveries by receiver and outcome "
            "(sent, retry, rate_limited, dead, deduplicated, dropped, taken_over).", ["receiver", "outcome"],
            registry=registry)
        self.send_seconds = Histogram(
            "gatewatch_notification_send_seconds", "Time of one delivery attempt.", ["receiver"],
            buckets=SEND_BUCKETS, registry=registry)
        self.dead_letters_total = 0
        self.depth: Callable[[], float] = _zero
        self.oldest_age: Callable[[], float] = _zero
        self.dead_now: Callable[[], float] = _zero
        self.silences: Callable[[], float] = _zero
        self.groups: Callable[[], float] = _zero
        registry.register(_OutboxCollector(self))
