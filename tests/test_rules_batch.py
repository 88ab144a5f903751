"""Batched ingest (agent/rules/batch.py) against the per-event reference, and bounded budgets."""

from __future__ import annotations

import json
import math
import random
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from agent.enrich import Catalog, Enricher
from agent.events import Event, Kind
from agent.parse.litellm import decode_body
from agent.rules.batch import BatchMemo
from agent.rules.budget import OVERFLOW, BudgetRule
from agent.rules.config import RuleEngineConfig
from agent.rules.engine import RuleEngine
from agent.rules.evaluate import CompiledRule
from agent.rules.loader import load_rule_set
from agent.rules.schema import build_rule_set
from agent.rules.signals import BATCH_EXTRACT
from agent.rules.testing import MemoryState
from agent.state.local import LocalState
from tests.conftest import FIXTURES
from tests.promtext import samples

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z

# rules that reach every branch of the batch path: multi-kind signals, consecutive, each
# matcher op, computed labels (stream, tag_), keep_empty_labels, a tiny series limit
EXTRA_RULES = """\
groups:
  - name: extra
    rules:
      - alert: Retries
        signal: retries
        over: 5m
        by: [model_group]
        above: 100
      - alert: Consecutive
        signal: errors
        aggregate: consecutive
        over: 5m
        by: [deployment]
        above: 100
      - alert: NotEqual
        signal: latency_seconds
        aggregate: max
        over: 5m
        by: [model_group, stream]
        where: {status: "!success"}
        above: 1000
      - alert: AnyOf
        signal: requests
        aggregate: count
        over: 5m
        by: [tag_team, deployment]
        where: {model_group: [group0, group1, fake-ok]}
        keep_empty_labels: true
        above: 100000
      - alert: NoMatch
        signal: ttft_seconds
        aggregate: p90
        over: 5m
        by: [aws_region, rate_limited]
        where: {deployment: "!~dep1.*"}
        above: 1000
      - alert: Everything
        signal: requests
        aggregate: count
        over: 5m
        above: 100000
"""


def fixture_events() -> list[Event]:
    events: list[Event] = []
    for path in sorted(FIXTURES.glob("generic_api_*.json")):
        capture = json.loads(path.read_text())
        events += decode_body((capture["body_text"] or json.dumps(capture["body_json"])).encode()).events
    enricher = Enricher(Catalog())
    for e in events:
        enricher.enrich(e)
    return events


def synthetic_events(rng: random.Random, n: int, now: float) -> list[Event]:
    out = []
    kinds = [Kind.REQUEST] * 6 + [Kind.RETRY, Kind.COOLDOWN, Kind.FALLBACK, Kind.DEPLOYMENT_STATE, Kind.OUTCOME]
    for _ in range(n):
        key = rng.randrange(40)
        failed = rng.random() < 0.3
        latency = rng.choice([rng.expovariate(0.5), None, math.nan, 0.0])
        out.append(Event(rng.choice(kinds), now - rng.uniform(-5, 700), source=rng.choice(["callback", "health"]),
                         model_group=f"group{key % 4}", deployment=rng.choice([f"dep{key}", ""]),
                         aws_account=str(key % 3), aws_region=f"r{key % 2}", api_provider=rng.choice(["bedrock", ""]),
                         status="failure" if failed else "success", rate_limited=failed and rng.random() < 0.5,
                         stream=rng.random() < 0.5, latency=latency, ttft=rng.choice([None, 0.2, 3.0]),
                         output_tokens=rng.choice([0, 50]), total_tokens=rng.choice([0, 10, 300]),
                         cost_usd=rng.choice([0.0, 0.25, 1e-7]), retries=rng.choice([0, 2]),
                         remaining_requests=rng.choice([None, 5.0]), limit_requests=rng.choice([None, 0.0, 50.0]),
                         tags=rng.choice([(), ("team:a",), ("team:b", "team:c")]), value=rng.choice([None, 1.0]),
                         team_alias=rng.choice(["", "t1", "t2"]), key_alias=rng.choice(["", "k1", "k\n2"]),
                         health_check=rng.random() < 0.1))
    return out


PACK = Path(__file__).resolve().parent.parent / "rules"


def pack_and_extra_rules():
    """The default pack plus EXTRA_RULES, one rule set."""
    files = [(p.name, p.read_text()) for p in sorted(PACK.glob("*.yml"))]
    return build_rule_set([*files, ("extra.yml", EXTRA_RULES)], env={})


def window_state(rule: CompiledRule, now: float) -> dict:
    view = rule.window.view(now)
    out = {"keys": list(view.keys[: view.n]), "count": view.count.tolist(), "sum": view.sum.tolist(),
           "last_time": view.last_time.tolist(), "last_value": np.nan_to_num(view.last_value, nan=-1.0).tolist(),
           "dropped": rule.window.dropped, "late": rule.window.late}
    for name in ("min", "max", "streak", "split"):
        arr = getattr(view, name)
        out[name] = None if arr is None else arr.tolist()
    if view.hist_rows is not None:
        out["hist"] = view.hist_rows(np.arange(view.n)).tolist()
    return out


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("max_series", [10000, 7])
def test_batches_give_exactly_the_per_event_windows(seed, max_series):
    """engine.handle (batched) and rule.observe per event (the reference) leave every window
    bit-for-bit equal: same rows in the same order, same sums, drops, late counts, streaks."""
    rng = random.Random(seed)
    now = T0
    events = fixture_events() + synthetic_events(rng, 1500, now)
    rng.shuffle(events)
    rule_set = pack_and_extra_rules()
    settings = RuleEngineConfig(persist_alerts=False, max_series_per_rule=max_series)
    batched = RuleEngine(settings, None, MemoryState(), clock=lambda: now, run_loops=False)
    batched.apply(rule_set)
    sizes = [1, 3, 512, 64, 100]
    i = 0
    while i < len(events):
        size = sizes[i % len(sizes)]
        batched.handle(events[i:i + size])
        i += size
    reference = [CompiledRule(r, lambda: now, max_series) for r in rule_set.rules() if r.budget is None]
    for e in events:
        if e.health_check:
            continue
        for rule in reference:
            if e.kind in rule.kinds:
                rule.observe(e)
    assert batched.observe_errors == 0
    observations = dropped = 0
    for rule in reference:
        got = batched.rules[rule.rule.id]
        assert isinstance(got, CompiledRule)
        expected = window_state(rule, now)
        assert window_state(got, now) == expected, rule.rule.id
        observations += int(sum(expected["count"]))
        dropped += expected["dropped"]
    assert len(reference) == 29 and observations > 1000
    assert (dropped > 0) == (max_series < 10)


def test_budget_batches_add_like_the_reference():
    rng = random.Random(5)
    events = [e for e in synthetic_events(rng, 3000, T0) if not e.health_check]
    engine = RuleEngine(RuleEngineConfig(persist_alerts=False), None, MemoryState(), clock=lambda: T0,
                        run_loops=False)
    engine.apply(load_rule_set(None))
    for i in range(0, len(events), 97):
        engine.handle(events[i:i + 97])
    budgets = [r for r in engine.rules.values() if isinstance(r, BudgetRule)]
    assert budgets
    for budget in budgets:
        expected: dict[tuple[str, ...], float] = {}
        for e in events:  # the per-event definition: cost of successes, `where`, no empty label
            if e.kind != Kind.REQUEST or e.status != "success" or not e.cost_usd or e.time >= budget.period.end \
                    or e.time < budget.period.start:
                continue
            key = tuple(e.label(name) for name in budget.by)
            if "" in key or not all(m.matches_value(e.label(m.name)) for m in budget.spec.where):
                continue
            expected[key] = expected.get(key, 0.0) + float(e.cost_usd)
        assert budget.totals == expected, budget.rule.id
    assert any(b.totals for b in budgets)


def test_batch_extractors_equal_the_signal_functions():
    events = fixture_events() + synthetic_events(random.Random(3), 500, T0)
    assert BATCH_EXTRACT
    for extract, many in BATCH_EXTRACT.items():
        assert repr(many(events)) == repr(list(map(extract, events))), extract.__name__


def test_a_bad_event_is_skipped_and_counted_once_the_rest_applied():
    rule = build_rule_set([("t.yml", "groups:\n  - name: g\n    rules:\n      - {alert: A, signal: latency_seconds, "
                                     "aggregate: sum, by: [deployment], above: 1}\n      - {alert: B, signal: "
                                     "latency_seconds, aggregate: count, by: [tag_team], keep_empty_labels: true,"
                                     " above: 1}\n")], env={})
    engine = RuleEngine(RuleEngineConfig(persist_alerts=False), None, MemoryState(), clock=lambda: T0,
                        run_loops=False)
    engine.apply(rule)
    bad = Event(Kind.REQUEST, T0, deployment="d", latency="slow")  # type: ignore[arg-type]
    bad.tags = None  # type: ignore[assignment]
    engine.handle([Event(Kind.REQUEST, T0, deployment="d", latency=1.0), bad,
                   Event(Kind.REQUEST, T0, deployment="d", latency=2.0)])
    assert engine.observe_errors == 1  # one bad event, however many rules it breaks
    view = engine.rules["g/A"].window.view(T0)
    assert view.count.tolist() == [2.0] and view.sum.tolist() == [3.0]
    assert engine.rules["g/B"].window.view(T0).count.tolist() == [2.0]


# -- bounded budgets ---------------------------------------------------------------------

BUDGET_RULES = """\
groups:
  - name: spend
    interval: 1m
    rules:
      - alert: KeySpend
        budget: {signal: cost_usd, by: [key_alias], where: {key_alias: "~.+"}, period: day, limit: 5,
                 thresholds: [1.0]}
"""
CAP = 40


async def budget_engine(tmp_path: Path, registry: CollectorRegistry | None = None) -> tuple[RuleEngine, LocalState]:
    rules = tmp_path / "budget.yml"
    rules.write_text(textwrap.dedent(BUDGET_RULES))
    state = LocalState(tmp_path / "state")
    await state.start()
    engine = RuleEngine(RuleEngineConfig(max_series_per_rule=CAP, persist_alerts=False), [str(rules)], state,
                        registry=registry, clock=lambda: T0, run_loops=False)
    await engine.start()
    return engine, state


def spend(i: int) -> float:
    return round(0.01 * (i % 17 + 1) + i / 1000, 6)


async def test_a_flood_of_keys_is_capped_and_folded_into_overflow(tmp_path):
    registry = CollectorRegistry()
    engine, state = await budget_engine(tmp_path, registry)
    budget = engine.rules["spend/KeySpend"]
    assert isinstance(budget, BudgetRule)
    n = 3 * CAP
    events = [Event(Kind.REQUEST, T0 - 60 + i * 0.1, key_alias=f"key-{i}", cost_usd=spend(i)) for i in range(n)]
    events += [Event(Kind.REQUEST, T0 - 1, key_alias="key-0", cost_usd=6.0)]  # a tracked key keeps its own total
    for i in range(0, len(events), 50):
        engine.handle(events[i:i + 50])
    overflow = (OVERFLOW,)
    folded = [spend(i) for i in range(CAP, n)]
    assert len(budget.totals) == CAP + 1 and budget.series() == CAP + 1
    assert budget.totals[overflow] == pytest.approx(sum(folded), rel=1e-12)
    assert budget.totals[("key-0",)] == pytest.approx(spend(0) + 6.0)
    assert budget.dropped == n - CAP

    alerts = await engine.evaluate_group("spend", T0)
    # the overflow is many keys' spend: over the per-key limit, yet no alert; key-0 is over its own
    assert budget.totals[overflow] > 5
    assert {a.labels["key_alias"] for a in alerts} == {"key-0"}
    stored = await state.get_counters(budget.state_key(budget.period.id))
    assert len(stored) == CAP + 1
    assert stored[json.dumps([OVERFLOW])] == pytest.approx(sum(folded), rel=1e-12)
    assert sum(stored.values()) == pytest.approx(sum(spend(i) for i in range(n)) + 6.0, rel=1e-12)

    rows = samples(generate_latest(registry).decode())
    dropped = [v for name, labels, v in rows if name == "gatewatch_rule_series_dropped_total"
               and labels.get("alertname") == "KeySpend"]
    series = [v for name, labels, v in rows
              if name == "gatewatch_rule_series" and labels.get("alertname") == "KeySpend"]
    assert dropped == [n - CAP] and series == [CAP + 1]
    await engine.stop(time.monotonic() + 30)
    await state.stop(time.monotonic() + 30)


async def test_persisted_totals_stay_bounded_across_a_restart(tmp_path):
    engine, state = await budget_engine(tmp_path)
    engine.handle([Event(Kind.REQUEST, T0 - 10, key_alias=f"old-{i}", cost_usd=1.0) for i in range(CAP - 5)])
    await engine.stop(time.monotonic() + 30)  # flushed at shutdown
    await state.stop(time.monotonic() + 30)

    engine, state = await budget_engine(tmp_path)
    budget = engine.rules["spend/KeySpend"]
    assert isinstance(budget, BudgetRule)
    # 35 keys stored by the first run: 5 new ones fit, the other 75 go to the overflow
    engine.handle([Event(Kind.REQUEST, T0 - 5, key_alias=f"new-{i}", cost_usd=0.5) for i in range(2 * CAP)])
    await engine.evaluate_group("spend", T0)
    stored = await state.get_counters(budget.state_key(budget.period.id))
    assert len(stored) == CAP + 1
    assert sum(stored.values()) == pytest.approx((CAP - 5) * 1.0 + 2 * CAP * 0.5)
    assert stored[json.dumps([OVERFLOW])] == pytest.approx((2 * CAP - 5) * 0.5)
    assert len(budget.totals) == CAP + 1 and budget.totals[(OVERFLOW,)] == pytest.approx((2 * CAP - 5) * 0.5)
    await engine.stop(time.monotonic() + 30)
    await state.stop(time.monotonic() + 30)


async def test_a_stored_hash_over_the_cap_is_folded_in_the_view(tmp_path):
    """Sidecars racing for the last places (shared backend) or state written before the cap:
    the view keeps the largest `max_series` keys and folds the rest, spend conserved."""
    engine, state = await budget_engine(tmp_path)
    budget = engine.rules["spend/KeySpend"]
    assert isinstance(budget, BudgetRule)
    amounts = {json.dumps([f"k{i}"]): float(i + 1) for i in range(2 * CAP)}
    await state.incr_many(budget.state_key(budget.period.id), amounts)
    await engine.evaluate_group("spend", T0)
    assert len(budget.totals) == CAP + 1
    kept = {k[0] for k in budget.totals if k != (OVERFLOW,)}
    assert kept == {f"k{i}" for i in range(CAP, 2 * CAP)}  # the largest spenders
    assert budget.totals[(OVERFLOW,)] == sum(range(1, CAP + 1))
    assert sum(budget.totals.values()) == sum(amounts.values())
    await engine.stop(time.monotonic() + 30)
    await state.stop(time.monotonic() + 30)


def test_a_bad_event_in_a_budget_batch_adds_nothing_twice():
    engine = RuleEngine(RuleEngineConfig(persist_alerts=False), None, MemoryState(), clock=lambda: T0,
                        run_loops=False)
    engine.apply(build_rule_set([("b.yml", BUDGET_RULES)], env={}))
    bad = Event(Kind.REQUEST, None, key_alias="k", cost_usd=5.0)  # type: ignore[arg-type]  # a source bug
    engine.handle([Event(Kind.REQUEST, T0, key_alias="k", cost_usd=1.0), bad,
                   Event(Kind.REQUEST, T0, key_alias="k", cost_usd=2.0)])
    assert engine.observe_errors == 1
    assert engine.rules["spend/KeySpend"].totals == {("k",): 3.0}


async def test_the_flush_admits_new_label_sets_only_while_the_stored_hash_has_room():
    """A rule that has not read the backend yet (a reload adds it) still keeps the stored hash bounded."""
    rule = next(iter(build_rule_set([("b.yml", BUDGET_RULES)], env={}).rules()))
    budget = BudgetRule(rule, lambda: T0, max_series=CAP)
    state = MemoryState()
    key = budget.state_key(budget.period.id)
    await state.incr_many(key, {json.dumps([f"s{i}"]): 1.0 for i in range(CAP - 3)})
    budget.observe_batch(BatchMemo([Event(Kind.REQUEST, T0, key_alias=f"n{i}", cost_usd=0.5) for i in range(10)]))
    assert budget.dropped == 0  # nothing known yet: every key tracked locally
    await budget.sync(state, T0)
    stored = await state.get_counters(key)
    assert len(stored) == CAP + 1 and stored[json.dumps([OVERFLOW])] == 7 * 0.5
    assert budget.dropped == 7 and len(budget.totals) == CAP + 1
