"""gatewatch's own health metrics (`gatewatch_*`), shared by every component.

One instance per running app, on the app's registry (never the global default one), so
tests can run several apps in one process. Components that own more specific
self-metrics (tail, outbox, exporters) register them on the same registry themselves.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 512, 1000, 2500)


class SelfMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_received = Counter(
            "gatewatch_events_received", "Events accepted into the pipeline, by source.", ["source"], registry=registry
        )
        self.events_rejected = Counter(
            "gatewatch_events_rejected",
            "Items that could not be used, by source and reason (counted and skipped).",
            ["source", "reason"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "gatewatch_ingest_batch_size", "Items per ingest POST.", buckets=BATCH_BUCKETS, registry=registry
        )
        self.ingest_requests = Counter(
            "gatewatch_ingest_requests", "Ingest HTTP requests by route and status code.", ["route", "code"],
            registry=registry,
        )
        self.unattributed = Counter(
            "gatewatch_unattributed_events",
            "Events whose deployment has no known AWS account or region (labelled unknown).",
            ["deployment", "model_group"],
            registry=registry,
        )
        self.series_overflow = Counter(
            "gatewatch_series_overflow",
            "Label sets folded into the __overflow__ series because a metric hit its series limit.",
            ["metric"],
            registry=registry,
        )
        self.sink_errors = Counter(
            "gatewatch_sink_errors", "Events a sink failed to handle (logged; the other events went on).",
            ["sink"], registry=registry
        )
        self.labels_truncated = Counter(
            "gatewatch_label_values_truncated",
            "Label values longer than labels.max_value_length, cut (ending in …) before any sink.",
            ["field"], registry=registry
        )
        self.sink_events = Counter(
            "gatewatch_sink_events", "Events a sink took; equals the events published to the pipeline.",
            ["sink"], registry=registry
        )
        self.pending_requests = Gauge(
            "gatewatch_pending_failed_requests",
            "Failed attempts held for the retry/fallback merge window.",
            registry=registry,
        )
        self.recovered_requests = Counter(
            "gatewatch_recovered_requests",
            "Requests whose first attempt failed and a retry or fallback succeeded.",
            registry=registry,
        )
        self.catalog_deployments = Gauge(
            "gatewatch_catalog_deployments", "Deployments known to the catalog.", registry=registry
        )
        self.catalog_reloads = Counter(
            "gatewatch_catalog_reloads", "Catalog loads by source and outcome.", ["source", "outcome"],
            registry=registry,
        )
        self.ready = Gauge("gatewatch_ready", "1 when the pipeline is started and config loaded.", registry=registry)
        self._unattributed_seen: set[tuple[str, str]] = set()
        self._unattributed_children: dict[tuple[str, str], object] = {}

    def count_unattributed(self, deployment: str, model_group: str) -> None:
        key = (deployment, model_group)
        child = self._unattributed_children.get(key)
        if child is None:
            if len(self._unattributed_children) >= 1000:
                key = ("__overflow__", "__overflow__")
                child = self._unattributed_children.get(key)
            if child is None:
                child = self.unattributed.labels(*key)
                self._unattributed_children[key] = child
        child.inc()  # type: ignore[attr-defined]
