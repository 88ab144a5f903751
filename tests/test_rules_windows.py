"""Windows and aggregates against a plain-Python reference over the same events."""

from __future__ import annotations

import math
import random
import textwrap

import numpy as np
import pytest

from agent.enrich import Catalog, Deployment
from agent.events import Event, Kind
from agent.rules.evaluate import CompiledRule
from agent.rules.schema import build_rule_set
from agent.state.windows import LocalWindow


def compile_rule(body: str) -> CompiledRule:
    text = "groups:\n  - name: g\n    rules:\n" + textwrap.indent(textwrap.dedent(body), "      ")
    rule = next(iter(build_rule_set([("t.yml", text)], env={}).rules()))
    return CompiledRule(rule, clock=lambda: 0.0)


def in_window(t: float, now: float, over: float, buckets: int) -> bool:
    width = over / buckets
    return math.floor(min(t, now) / width) > math.floor(now / width) - buckets


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered) - 1e-9)) - 1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_basic_aggregates_equal_the_reference(seed):
    rng = random.Random(seed)
    window = LocalWindow(300, buckets=20, minmax=True)
    now = 1_000_000.0
    events = [(now - rng.uniform(0, 600), rng.uniform(0, 50), rng.choice("abc")) for _ in range(2000)]
    for t, v, k in events:
        window.observe((k,), t, v)
    view = window.view(now)
    for row, key in enumerate(view.keys[: view.n]):
        inside = [v for t, v, k in events if (k,) == key and in_window(t, now, 300, 20)]
        assert view.count[row] == len(inside)
        assert view.sum[row] == pytest.approx(sum(inside))
        assert view.min[row] == min(inside) and view.max[row] == max(inside)
        latest = max((e for e in events if (e[2],) == key), key=lambda e: e[0])
        assert view.last_time[row] == latest[0] and view.last_value[row] == latest[1]


@pytest.mark.parametrize("overrides", [False, True], ids=["split-counts", "histogram"])
@pytest.mark.parametrize("seed", range(6))
def test_percentile_condition_is_exact_and_value_consistent(seed, overrides):
    rng = random.Random(seed)
    threshold = rng.choice([0.8, 2.0, 7.3, 20.0])
    direction = rng.choice(["above", "below"])
    # an override that matches no key still sends the rule down the per-key-threshold path
    extra = f"overrides: [{{match: {{deployment: none}}, {direction}: 1000}}]" if overrides else ""
    rule = compile_rule(f"""\
        - alert: P
          signal: latency_seconds
          aggregate: p{rng.choice([50, 90, 95, 99])}
          over: 5m
          by: [deployment]
          {direction}: {threshold}
          {extra}
        """)
    q = rule.rule.quantile
    now = 2_000_000.0
    events = []
    for k in range(40):  # 40 keys with different distributions straddling the threshold
        scale = threshold * rng.uniform(0.3, 2.0)
        for _ in range(rng.randint(1, 60)):
            t = now - rng.uniform(0, 400)
            v = round(rng.expovariate(1 / scale), 3) if rng.random() < 0.9 else threshold  # exact ties too
            events.append((t, v, f"d{k}"))
            rule.observe(Event(Kind.REQUEST, t, deployment=f"d{k}", latency=v))
    values, cond, view, _ = rule.compute(now)
    bounds = rule.window.bounds
    for row, key in enumerate(view.keys[: view.n]):
        inside = [v for t, v, k in events if k == key[0] and in_window(t, now, 300, 10)]
        if not inside:
            assert not cond[row]
            continue
        exact = nearest_rank(inside, q)
        expected = exact > threshold if direction == "above" else exact < threshold
        assert bool(cond[row]) == expected, (key, exact, threshold)
        if not cond[row] and not overrides:
            assert math.isnan(values[row])  # values are only computed where the condition holds
            continue
        # the shown value lies in the same histogram bucket as the exact percentile
        j = np.searchsorted(bounds, exact, side="left")
        low = bounds[j - 1] if j > 0 else min(inside)
        high = bounds[j] if j < len(bounds) else max(inside)
        assert low - 1e-9 <= values[row] <= high + 1e-9
        assert min(inside) <= values[row] <= max(inside)


def test_late_future_and_series_limit():
    window = LocalWindow(60, buckets=6, max_series=2)
    now = 10_000.0
    window.observe(("a",), now - 5, 1.0)
    window.observe(("a",), now + 3600, 2.0)  # clock skew: counted now
    window.observe(("b",), now - 3600, 3.0)  # older than the ring: dropped, counted
    window.observe(("c",), now, 4.0)  # a third key: over the limit
    view = window.view(now)
    rows = {k: i for i, k in enumerate(view.keys[: view.n])}
    assert view.count[rows[("a",)]] == 2 and view.sum[rows[("a",)]] == 3.0
    assert view.count[rows[("b",)]] == 0
    assert (window.late, window.dropped, len(window)) == (1, 1, 2)


def test_buckets_expire_and_rows_are_freed():
    window = LocalWindow(60, buckets=6)
    for i in range(100):
        window.observe((f"k{i}",), 1000.0, 1.0)
    assert window.view(1000.0).count.sum() == 100
    assert window.view(1061.0).count.sum() == 0  # the bucket left the window
    assert window.forget(1200.0, 60, keep={("k1",)}) == 99
    assert len(window) == 1
    window.observe(("new",), 1200.0, 5.0)  # reuses a freed row
    view = window.view(1200.0)
    assert view.n == 100 and view.count.sum() == 1 and ("new",) in view.keys


def test_aggregates_of_a_rule():
    now = 5000.0
    latencies = [1.0, 2.0, 4.0, 8.0]
    for aggregate, expected in [("count", 4), ("sum", 15), ("avg", 3.75), ("min", 1), ("max", 8),
                                ("rate", 15 / 60), ("last", 8.0)]:
        rule = compile_rule(f"""\
            - alert: A
              signal: latency_seconds
              aggregate: {aggregate}
              over: 1m
              by: [deployment]
              above: 0
            """)
        for i, v in enumerate(latencies):
            rule.observe(Event(Kind.REQUEST, now - 30 + i, deployment="d", latency=v))
        values, cond, _, _ = rule.compute(now)
        assert values[0] == pytest.approx(expected), aggregate
        assert cond[0]


def test_error_ratio_min_events_and_health_checks_are_left_out():
    rule = compile_rule("""\
        - alert: A
          signal: error_ratio
          over: 5m
          by: [deployment]
          min_events: 4
          above: 0.5
        """)
    now = 100_000.0
    for status in ("failure", "failure", "success"):
        rule.observe(Event(Kind.REQUEST, now - 10, deployment="d", status=status))
    values, cond, _, _ = rule.compute(now)
    assert values[0] == pytest.approx(2 / 3) and not cond[0]  # 3 events < min_events
    rule.observe(Event(Kind.REQUEST, now - 5, deployment="d", status="failure"))
    values, cond, _, _ = rule.compute(now)
    assert values[0] == 0.75 and cond[0]
    # events without the `by` label are skipped (an alert on deployment="" says nothing)
    rule.observe(Event(Kind.REQUEST, now - 5, deployment="", status="failure"))
    assert len(rule.window) == 1


def test_consecutive_resets_on_success_and_goes_stale():
    rule = compile_rule("""\
        - alert: A
          signal: errors
          aggregate: consecutive
          over: 10m
          by: [deployment]
          above: 2
        """)
    now = 50_000.0
    for status in ("failure", "failure", "success", "failure", "failure", "failure"):
        rule.observe(Event(Kind.REQUEST, now, deployment="d", status=status))
    values, cond, _, _ = rule.compute(now)
    assert values[0] == 3 and cond[0]
    values, cond, _, _ = rule.compute(now + 601)  # last failure older than `over`
    assert values[0] == 0 and not cond[0]


def test_absent_fires_only_for_keys_that_had_events():
    rule = compile_rule("""\
        - alert: A
          signal: requests
          aggregate: absent
          over: 10m
          by: [deployment]
          forget_after: 1h
        """)
    rule.observe(Event(Kind.REQUEST, 1000.0, deployment="quiet"))
    rule.observe(Event(Kind.REQUEST, 1500.0, deployment="busy"))
    values, cond, view, _ = rule.compute(1550.0)
    assert not cond.any()
    values, cond, view, _ = rule.compute(1000.0 + 600)
    rows = {k[0]: i for i, k in enumerate(view.keys[: view.n])}
    assert cond[rows["quiet"]] and not cond[rows["busy"]] and values[rows["quiet"]] == 600
    _, cond, _, _ = rule.compute(1000.0 + 3601)
    assert not cond[rows["quiet"]]  # forgotten after forget_after


def test_quota_utilization_uses_the_catalog_limits():
    rule = compile_rule("""\
        - alert: Q
          signal: quota_utilization
          over: 1m
          by: [deployment]
          above: 0.9
        """)
    catalog = Catalog([Deployment("a", "g", rpm=10, tpm=1000), Deployment("b", "g", tpm=100),
                       Deployment("c", "g")])
    now = 9000.0
    for i in range(9):  # 9 calls/min of 10 tokens against rpm 10 / tpm 1000
        rule.observe(Event(Kind.REQUEST, now - 50 + i, deployment="a", total_tokens=10))
    rule.observe(Event(Kind.REQUEST, now - 1, deployment="b", total_tokens=95))
    rule.observe(Event(Kind.REQUEST, now - 1, deployment="c", total_tokens=10 ** 6))
    values, cond, view, _ = rule.compute(now, catalog)
    rows = {k[0]: i for i, k in enumerate(view.keys[: view.n])}
    assert values[rows["a"]] == pytest.approx(0.9) and not cond[rows["a"]]
    assert values[rows["b"]] == pytest.approx(0.95) and cond[rows["b"]]
    assert math.isnan(values[rows["c"]]) and not cond[rows["c"]]


def test_overrides_set_per_key_thresholds():
    rule = compile_rule("""\
        - alert: P
          signal: latency_seconds
          aggregate: p50
          over: 5m
          by: [model_group]
          above: 10
          overrides:
            - match: {model_group: "~.*opus.*"}
              above: 60
              min_events: 2
        """)
    now = 7000.0
    for group in ("claude-opus", "gpt-lab"):
        rule.observe(Event(Kind.REQUEST, now - 5, model_group=group, latency=30.0))
    _, cond, view, thr = rule.compute(now)
    rows = {k[0]: i for i, k in enumerate(view.keys[: view.n])}
    assert thr[rows["claude-opus"]] == 60 and not cond[rows["claude-opus"]]
    assert thr[rows["gpt-lab"]] == 10 and cond[rows["gpt-lab"]]
