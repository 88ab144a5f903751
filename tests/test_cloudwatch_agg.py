"""CloudWatch aggregation: per-interval series from the real LiteLLM captures, distributions, bounds, config."""

from __future__ import annotations

import math
import random

import pytest

from agent.config import parse_config
from agent.configtypes import ConfigError
from agent.enrich import Enricher, catalog_from_config_text
from agent.events import Event, Kind
from agent.parse.litellm import decode_body
from agent.sinks.cloudwatch_agg import (
    COUNTER_METRICS,
    OVERFLOW,
    Aggregator,
    Distribution,
    Interval,
    clean_dimension_value,
)
from agent.sinks.config import DEFAULT_DIMENSION_SETS
from tests.cloudwatch_support import fixture_bodies, grand_totals, raw_items, raw_totals_by_model_group
from tests.conftest import FIXTURES

COUNTER = {spec.name: i for i, spec in enumerate(COUNTER_METRICS)}


def replayed_events() -> list[Event]:
    """Every event of the batch captures, parsed and enriched like the pipeline does."""
    catalog = catalog_from_config_text((FIXTURES / "config.yaml").read_text(), source="config.yaml")
    enricher = Enricher(catalog)
    events = []
    for body in fixture_bodies():
        batch = decode_body(body)
        assert not batch.rejected
        for event in batch.events:
            enricher.enrich(event)
            events.append(event)
    return events


def drained(events: list[Event], sets=None, max_series: int = 5000) -> tuple[Aggregator, Interval]:
    agg = Aggregator(sets if sets is not None else DEFAULT_DIMENSION_SETS, max_series)
    for event in events:
        agg.add(event)
    return agg, agg.drain(1_700_000_000.0)


def by_set(interval: Interval, dims: tuple[str, ...]):
    return {tuple(v for _, v in p.dimensions): p.series for p in interval.points
            if tuple(n for n, _ in p.dimensions) == dims}


def test_model_group_series_equal_the_payloads_own_totals(lab_environ):
    _, interval = drained(replayed_events())
    series = by_set(interval, ("ModelGroup",))
    expected = raw_totals_by_model_group()
    assert set(series) == {(group,) for group in expected}
    for group, totals in expected.items():
        s = series[(group,)]
        assert s.counters[COUNTER["Requests"]] == totals.requests
        assert s.counters[COUNTER["Errors"]] == totals.errors
        assert s.counters[COUNTER["InputTokens"]] == totals.input_tokens
        assert s.counters[COUNTER["OutputTokens"]] == totals.output_tokens
        assert s.counters[COUNTER["CostUSD"]] == pytest.approx(totals.cost, rel=1e-12)
        if totals.latency_ms:
            assert s.latency is not None
            assert s.latency.count == len(totals.latency_ms)
            assert s.latency.sum == pytest.approx(sum(totals.latency_ms), rel=1e-9)
            assert s.latency.min == pytest.approx(min(totals.latency_ms), rel=1e-9)
            assert s.latency.max == pytest.approx(max(totals.latency_ms), rel=1e-9)
        else:
            assert s.latency is None


def test_every_dimension_set_holds_the_grand_totals(lab_environ):
    _, interval = drained(replayed_events())
    total = grand_totals()
    for dims in DEFAULT_DIMENSION_SETS:
        series = by_set(interval, tuple(dims)).values()
        assert sum(s.counters[COUNTER["Requests"]] for s in series) == total.requests
        assert sum(s.counters[COUNTER["Errors"]] for s in series) == total.errors
        assert sum(s.counters[COUNTER["InputTokens"]] for s in series) == total.input_tokens
        assert sum(s.latency.count for s in series if s.latency) == len(total.latency_ms)


def test_account_and_region_come_from_the_catalog(lab_environ):
    _, interval = drained(replayed_events())
    series = by_set(interval, ("ModelGroup", "AwsAccount", "AwsRegion"))
    gpt_lab = {key[1:]: s for key, s in series.items() if key[0] == "gpt-lab"}
    # the three gpt-lab deployments live in three accounts/regions (config.yaml tags)
    assert set(gpt_lab) <= {("111111111111", "us-east-1"), ("222222222222", "eu-west-1"),
                            ("333333333333", "us-west-2"), ("unknown", "unknown")}
    assert ("111111111111", "us-east-1") in gpt_lab


def test_rate_limited_and_retries_from_the_captures(lab_environ):
    events = replayed_events()
    _, interval = drained(events)
    series = by_set(interval, ("ModelGroup",))
    # provider throttling: 429s, but not the router's "no deployments available" (its own signal)
    limited = sum(1 for item in raw_items() if (item.get("error_information") or {}).get("error_code") == "429"
                  and item["error_information"].get("normalized_error") != "429_NO_HEALTHY_DEPLOYMENTS")
    assert limited == 7  # upstream_429, no_deployments' first attempts ... (README scenarios)
    assert sum(s.counters[COUNTER["RateLimited"]] for s in series.values()) == limited
    raw_retries = sum(int(((item.get("hidden_params") or {}).get("additional_headers") or {})
                          .get("x-litellm-attempted-retries") or 0) for item in raw_items())
    assert raw_retries > 0  # retry_then_success
    assert sum(s.counters[COUNTER["Retries"]] for s in series.values()) == raw_retries


def test_health_checks_outcomes_and_other_kinds_are_left_out():
    agg = Aggregator(DEFAULT_DIMENSION_SETS)
    assert not agg.add(Event(kind=Kind.REQUEST, time=1.0, health_check=True, model="fake-ok"))
    assert not agg.add(Event(kind=Kind.OUTCOME, time=1.0, model_group="gpt-lab"))
    assert not agg.add(Event(kind=Kind.BUDGET, time=1.0))
    assert not agg.add(Event(kind=Kind.RETRY, time=1.0, source="callback", model_group="gpt-lab"))
    assert agg.pending_events == 0 and len(agg) == 0


def test_log_retries_and_cooldowns_count():
    agg = Aggregator([["Deployment"]])
    agg.add(Event(kind=Kind.RETRY, time=1.0, source="log", deployment="gpt-lab-acct333-usw2", value=2))
    agg.add(Event(kind=Kind.RETRY, time=1.0, source="log", deployment="gpt-lab-acct333-usw2"))
    agg.add(Event(kind=Kind.COOLDOWN, time=1.0, source="log", deployment="gpt-lab-acct333-usw2", value=30))
    series = by_set(agg.drain(0.0), ("Deployment",))[("gpt-lab-acct333-usw2",)]
    assert series.counters[COUNTER["Retries"]] == 3
    assert series.counters[COUNTER["Cooldowns"]] == 1
    assert series.counters[COUNTER["Requests"]] == 0


def test_drain_starts_a_new_interval(lab_environ):
    agg, first = drained(replayed_events()[:5])
    assert first.events == 5 and first.points
    second = agg.drain(1_700_000_060.0)
    assert second.points == [] and second.events == 0


def test_distribution_is_exact_in_count_sum_min_max_and_close_in_percentiles():
    rng = random.Random(7)
    values = [rng.lognormvariate(6.0, 1.2) for _ in range(20000)]  # ms, a heavy tail like LLM latency
    dist = Distribution()
    for v in values:
        dist.add(v)
    assert dist.count == len(values)
    assert dist.sum == pytest.approx(sum(values), rel=1e-12)
    assert dist.min == min(values) and dist.max == max(values)
    assert len(dist) < 600  # log bins: far fewer distinct values than observations
    expanded = sorted((v for chunk in dist.chunks(150) for v, c in zip(chunk.values, chunk.counts, strict=True)
                       for _ in range(c)))
    exact = sorted(values)
    for q in (0.5, 0.9, 0.95, 0.99):
        i = int(q * (len(exact) - 1))
        assert expanded[i] == pytest.approx(exact[i], rel=0.021)


def test_chunks_split_at_the_limit_and_keep_totals():
    dist = Distribution()
    for i in range(250):
        dist.add(1.0 * 1.05**i)  # 250 distinct bins
    chunks = list(dist.chunks(100))
    assert [len(c.values) for c in chunks] == [100, 100, 50]
    assert sum(c.count for c in chunks) == 250
    assert sum(c.sum for c in chunks) == pytest.approx(dist.sum, rel=1e-9)
    assert min(c.min for c in chunks) == pytest.approx(dist.min) and max(c.max for c in chunks) == pytest.approx(
        dist.max)
    for c in chunks:
        assert c.min <= min(c.values) and max(c.values) <= c.max


def test_zero_and_nan_latencies():
    dist = Distribution()
    dist.add(0.0)
    dist.add(float("nan"))
    dist.add(5.0)
    assert dist.count == 2 and dist.min == 0.0 and dist.sum == 5.0


def test_series_limit_folds_new_series_into_overflow():
    agg = Aggregator([["Deployment"]], max_series=2)
    for i in range(5):
        agg.add(Event(kind=Kind.REQUEST, time=1.0, deployment=f"d{i}", model_group="g", latency=0.1))
    series = by_set(agg.drain(0.0), ("Deployment",))
    assert set(series) == {("d0",), ("d1",), (OVERFLOW,)}
    assert series[(OVERFLOW,)].counters[COUNTER["Requests"]] == 3
    assert agg.overflowed == 3


@pytest.mark.parametrize(("raw", "clean"), [
    ("", "unknown"), ("   ", "unknown"), ("gpt-lab", "gpt-lab"), ("café", "caf?"), ("a\tb", "a?b"),
    ("x" * 2000, "x" * 1024), ("ü", "?"),
])
def test_dimension_values_are_made_acceptable_to_cloudwatch(raw, clean):
    assert clean_dimension_value(raw) == clean


def test_config_defaults_are_off_with_the_documented_dimension_sets():
    cfg = parse_config({})
    assert cfg.cloudwatch.enabled is False
    assert cfg.cloudwatch.mode == "emf" and cfg.cloudwatch.namespace == "LiteLLM"
    assert cfg.cloudwatch.interval == 60 and cfg.cloudwatch.storage_resolution == 60
    assert cfg.cloudwatch.dimensions == [["ModelGroup"], ["ModelGroup", "Deployment"],
                                         ["ModelGroup", "AwsAccount", "AwsRegion"], ["Provider"]]


@pytest.mark.parametrize(("section", "path", "words"), [
    ({"dimensions": [["ModelGroup", "Team"]]}, "cloudwatch.dimensions[0][1]", "one of"),
    ({"dimensions": [["ModelGroup", "ModelGroup"]]}, "cloudwatch.dimensions[0]", "twice"),
    ({"dimensions": [["Provider"], ["Provider"]]}, "cloudwatch.dimensions[1]", "twice"),
    ({"dimensions": []}, "cloudwatch.dimensions", "at least one"),
    ({"namespace": "AWS/Bedrock"}, "cloudwatch.namespace", "reserved"),
    ({"mode": "kinesis"}, "cloudwatch.mode", "'emf', 'api'"),
    ({"storage_resolution": 5}, "cloudwatch.storage_resolution", "60, 1"),
    ({"interval": "soon"}, "cloudwatch.interval", "duration"),
    ({"interval": "500ms"}, "cloudwatch.interval", "at least 1s"),
    ({"emf_output": "ftp://agent:25888"}, "cloudwatch.emf_output", "tcp://host:port"),
    ({"emf_output": "tcp://localhost"}, "cloudwatch.emf_output", "tcp://host:port"),
    ({"role_arn": "arn:aws:iam::123:role/x"}, "cloudwatch.role_arn", "IAM role ARN"),
    ({"max_pending_batches": 0}, "cloudwatch.max_pending_batches", "from 1"),
    ({"regoin": "us-east-1"}, "cloudwatch.regoin", "unknown key"),
])
def test_bad_config_names_the_key(section, path, words):
    with pytest.raises(ConfigError) as err:
        parse_config({"cloudwatch": {"enabled": True, **section}}, file="gatewatch.yaml")
    assert err.value.key_path == path
    assert words in str(err.value) and str(err.value).startswith("gatewatch.yaml: ")


def test_good_config_parses():
    cfg = parse_config({"cloudwatch": {
        "enabled": True, "mode": "api", "interval": "10s", "storage_resolution": 1, "region": "eu-west-1",
        "role_arn": "arn:aws:iam::123456789012:role/gatewatch-monitoring", "external_id": "${EXT_ID:-abc123}",
        "dimensions": [["ModelGroup"], []], "emf_output": "udp://127.0.0.1:25888",
    }})
    assert cfg.cloudwatch.interval == 10 and cfg.cloudwatch.dimensions == [["ModelGroup"], []]
    assert repr(cfg.cloudwatch.external_id) == "Secret('***')"
    assert math.isclose(cfg.cloudwatch.timeout, 10.0)


def test_cooldowns_and_retries_from_the_proxy_logs(lab_environ):
    logs = pytest.importorskip("agent.parse.logs")
    parser = logs.LogParser()
    catalog = catalog_from_config_text((FIXTURES / "config.yaml").read_text(), source="config.yaml")
    enricher = Enricher(catalog)
    agg = Aggregator(DEFAULT_DIMENSION_SETS)
    for line in (FIXTURES / "logs_no_deployments.jsonl").read_text().splitlines():
        for event in parser.parse(line):
            enricher.enrich(event)
            agg.add(event)
    interval = agg.drain(0.0)
    deployments = by_set(interval, ("ModelGroup", "Deployment"))
    # the scenario: all three gpt-lab accounts answer 429 and are cooled down
    cooled = {key[1] for key, s in deployments.items() if s.counters[COUNTER["Cooldowns"]] == 1}
    assert cooled == {"gpt-lab-acct111-use1", "gpt-lab-acct222-euw1", "gpt-lab-acct333-usw2"}
    regions = by_set(interval, ("ModelGroup", "AwsAccount", "AwsRegion"))
    assert regions[("gpt-lab", "222222222222", "eu-west-1")].counters[COUNTER["Cooldowns"]] == 1
    assert by_set(interval, ("ModelGroup",))[("gpt-lab",)].counters[COUNTER["Retries"]] > 0
