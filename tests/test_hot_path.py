"""The profile-guided hot path keeps behaviour: /metrics bytes, decode results, series limits.

- agent/exposition.py must render exactly what prometheus_client's generate_latest renders.
- decode_body's one-pass typed decode of a JSON array must give the same events as the
  per-item path it falls back to.
- PrometheusSink's cached children must count overflow exactly like the uncached lookup.
"""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary
from prometheus_client.exposition import generate_latest as stock_generate_latest
from prometheus_client.metrics_core import GaugeHistogramMetricFamily, StateSetMetricFamily, UnknownMetricFamily
from prometheus_client.registry import Collector

from agent.enrich import Enricher, catalog_from_config_text
from agent.events import Kind
from agent.exposition import generate_latest
from agent.parse.litellm import decode_body
from agent.pipeline import Pipeline, RequestTracker
from agent.selfmetrics import SelfMetrics
from agent.sinks.prometheus import OVERFLOW, PrometheusSink
from tests.conftest import FIXTURES, batch_files, capture_items


class _Odd(Collector):
    """Metric types and names the sinks never make, so every branch of the format is seen."""

    def collect(self):
        yield GaugeHistogramMetricFamily("queue_wait", "gauge histogram", buckets=[("1.0", 4), ("+Inf", 5)],
                                         gsum_value=3.5)
        yield StateSetMetricFamily("feature", "state set", {"on": True, "off": False})
        unknown = UnknownMetricFamily("mystery", "unknown type", labels=["x"])
        unknown.add_metric(["1"], 2.0, timestamp=1_700_000_000.5)
        yield unknown


def _registry_with_everything() -> CollectorRegistry:
    registry = CollectorRegistry()
    counter = Counter("calls", "Calls with \\ backslash\nand newline.", ["model", "note"], registry=registry)
    counter.labels("gpt", 'quote " backslash \\ newline \n unicode é').inc(3)
    counter.labels("", "").inc()
    Gauge("depth", "A gauge.", registry=registry).set(-1.5e-7)
    histogram = Histogram("latency", "A histogram.", ["b", "a", "le_not"], registry=registry, buckets=(0.1, 1, 10))
    for value in (0.05, 0.5, 5, 50, float("inf")):
        histogram.labels("2", "1", "x").observe(value)
    Summary("size", "A summary.", ["k"], registry=registry).labels("v").observe(12)
    Info("build", "Build info.", registry=registry).info({"version": "1.0", "commit": "abc"})
    Enum("mode", "An enum.", states=["a", "b"], registry=registry).state("b")
    Counter("weird_total", "A counter whose name already ends in total.", registry=registry).inc(2)
    registry.register(_Odd())
    return registry


def test_renderer_is_byte_identical_to_prometheus_client():
    registry = _registry_with_everything()
    assert generate_latest(registry) == stock_generate_latest(registry)


def _pipeline(optional=(), limit=10000):
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)
    catalog = catalog_from_config_text((FIXTURES / "config.yaml").read_text())
    sink = PrometheusSink(registry, metrics, optional_labels=optional, series_limit=limit, catalog=catalog)
    pipeline = Pipeline(Enricher(catalog, metrics.count_unattributed), RequestTracker(60.0), [sink])
    return pipeline, sink, registry


def test_renderer_matches_on_the_real_captures(lab_environ):
    pipeline, _, registry = _pipeline(optional=["user", "hashed_api_key"])
    for path in batch_files():
        pipeline.publish(decode_body(json.dumps(capture_items(path.name)).encode()).events)
    pipeline.flush()
    text = generate_latest(registry)
    assert text == stock_generate_latest(registry)
    assert b"litellm_deployment_success_responses_total{" in text


def _as_tuples(events):
    return [tuple(getattr(e, name) for name in e.__slots__) for e in events]


def test_one_pass_array_decode_equals_the_per_item_path():
    items = [item for path in batch_files() for item in capture_items(path.name)]
    fast = decode_body(json.dumps(items).encode())
    # a bad item in the array forces the per-item path for the whole body
    slow = decode_body(json.dumps([*items, "not an object"]).encode())
    assert fast.rejected == {} and slow.rejected == {"not_an_object": 1}
    assert fast.items == len(items) and slow.items == len(items) + 1
    assert _as_tuples(fast.events) == _as_tuples(slow.events)
    assert sum(1 for e in fast.events if e.finish_reasons) > 0  # the response is read on this path too


def test_unknown_status_is_rejected_on_the_one_pass_path():
    item = dict(capture_items("generic_api_success.json")[0], status="exploded")
    batch = decode_body(json.dumps([item, capture_items("generic_api_success.json")[0]]).encode())
    assert batch.rejected == {"invalid_values": 1} and len(batch.events) == 1


def _success(key: str):
    item = dict(capture_items("generic_api_success.json")[0])
    item["metadata"] = dict(item["metadata"], user_api_key_alias=key)
    return item


def test_cached_children_count_overflow_like_the_first_lookup(lab_environ):
    limit = 3
    pipeline, sink, registry = _pipeline(limit=limit)
    keys = [f"key-{i}" for i in range(6)]
    for _round in range(3):  # repeats hit the cache; over-limit keys must keep counting overflow
        pipeline.publish(decode_body(json.dumps([_success(k) for k in keys]).encode()).events)
    assert len(sink.dep_success) == limit + 1  # three label sets and the overflow series
    overflow_calls = registry.get_sample_value(
        "litellm_deployment_success_responses_total",
        {name: OVERFLOW for name in sink.dep_success.labelnames})
    assert overflow_calls == 3 * (len(keys) - limit)
    assert registry.get_sample_value("gatewatch_series_overflow_total",
                                     {"metric": "litellm_deployment_success_responses"}) == 3 * (len(keys) - limit)
    kept = registry.get_sample_value("litellm_deployment_success_responses_total",
                                     dict(zip(sink.dep_success.labelnames,
                                              _labels_of(registry, "key-0"), strict=True)))
    assert kept == 3


def _labels_of(registry, key):
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "litellm_deployment_success_responses_total" and \
                    sample.labels.get("api_key_alias") == key:
                return list(sample.labels.values())
    raise AssertionError(f"no series for {key}")


def test_remaining_quota_keeps_the_deployment_after_a_fallback(lab_environ):
    """The served deployment's remaining requests carry its own model_id even when the call
    was a fallback (the fallback counter's model_id "None" must not leak into it)."""
    pipeline, _, registry = _pipeline()
    events = decode_body(json.dumps(capture_items("generic_api_fallback_2.json")).encode()).events
    served = next(e for e in events if e.kind == Kind.REQUEST and e.fallbacks and e.remaining_requests is not None)
    pipeline.publish(events)
    values = [s for f in registry.collect() for s in f.samples if s.name == "litellm_remaining_requests_metric"]
    assert values and all(s.labels["model_id"] == served.deployment for s in values)
    assert values[0].value == served.remaining_requests
