"""`scope: global` windows through a real Redis: three sidecars see what one would see with all traffic.

Three rule engines, each with its own RedisState on one redis-server, get a third of the
events each (round robin). A fourth engine, on local windows, gets every event. After the
sidecars refresh, every global rule must compute the same value for every label set as
the reference, for every aggregate the windows support, and fire the same alerts.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config import parse_config
from agent.events import Event, Kind
from agent.rules.config import RuleEngineConfig
from agent.rules.engine import RuleEngine
from agent.rules.evaluate import CompiledRule
from agent.rules.testing import MemoryState
from agent.state.redis import RedisState
from agent.state.shared_window import SharedWindow, shared_window_factory
from tests.notify_support import FakeClock, until
from tests.redis_support import RedisServer, requires_redis

pytestmark = [pytest.mark.integration, requires_redis]

BY = "[model_group, deployment, aws_region]"
RULES = f"""
groups:
  - name: g
    interval: 15s
    rules:
      - {{alert: Throttled, signal: rate_limited, aggregate: count, over: 5m, by: {BY}, above: 3, scope: global}}
      - {{alert: ErrorRatio, signal: error_ratio, over: 5m, by: {BY}, above: 0.2, min_events: 5, scope: global}}
      - {{alert: SlowP95, signal: latency_seconds, aggregate: p95, over: 5m, by: {BY}, above: 4, scope: global}}
      - alert: SlowP90Overrides
        signal: latency_seconds
        aggregate: p90
        over: 5m
        by: {BY}
        above: 5
        scope: global
        overrides: [{{match: {{deployment: dep-1}}, above: 2}}]
      - {{alert: MaxLatency, signal: latency_seconds, aggregate: max, over: 5m, by: {BY}, above: 9, scope: global}}
      - {{alert: Headroom, signal: remaining_requests_ratio, over: 5m, by: {BY}, below: 0.2, scope: global}}
      - {{alert: Tokens, signal: tokens_total, aggregate: sum, over: 5m, by: {BY}, above: 3000, scope: global}}
      - {{alert: TokenRate, signal: tokens_total, aggregate: rate, over: 5m, by: {BY}, above: 10, scope: global}}
      - {{alert: LastLatency, signal: latency_seconds, aggregate: last, over: 5m, by: {BY}, above: 3, scope: global}}
      - {{alert: Silent, signal: requests, aggregate: absent, over: 1m, by: {BY}, scope: global}}
      - {{alert: LocalCount, signal: requests, aggregate: count, over: 5m, by: {BY}, above: 1000}}
"""
STREAK_RULES = """
groups:
  - name: s
    interval: 15s
    rules:
      - {alert: Streak, signal: errors, aggregate: consecutive, over: 5m, by: [deployment], above: 4, scope: global}
"""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.close()


class Cluster:
    def __init__(self, url: str, rules: Path, tmp_path: Path, clock: FakeClock, n: int = 3) -> None:
        cfg = parse_config({"state": {"url": url, "flush_interval": "100ms"}}).state
        self.states = [RedisState(cfg, None, tmp_path / f"s{i}", clock=clock) for i in range(n)]
        self.engines = []
        for state in self.states:
            engine = RuleEngine(RuleEngineConfig(), [str(rules)], state, clock=clock, run_loops=False)
            engine.shared_windows = shared_window_factory(state)
            self.engines.append(engine)
        self.reference = RuleEngine(RuleEngineConfig(), [str(rules)], MemoryState(), clock=clock, run_loops=False)

    async def start(self) -> None:
        for state in self.states:
            await state.start()
        for engine in [*self.engines, self.reference]:
            await engine.start()

    async def stop(self) -> None:
        for engine in self.engines:
            await engine.stop(time.monotonic() + 30)
        for state in self.states:
            await state.stop(time.monotonic() + 30)

    async def settle(self) -> None:
        """Wait for every sidecar's flusher to have sent its buffered observations (flush_interval 100ms)."""
        def sent() -> bool:
            return all(s.queued() == 0 and not any(w._keys for w in s.windows) for s in self.states)

        await until(sent, limit=10, what="every sidecar flushed")

    def feed(self, events: list[Event]) -> None:
        for i, event in enumerate(events):
            self.engines[i % len(self.engines)].handle([event])
        self.reference.handle(events)


@pytest.fixture
async def cluster(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Cluster] = []

    def make(rules_text: str, clock: FakeClock) -> Cluster:
        rules = tmp_path / f"rules{len(made)}.yml"
        rules.write_text(rules_text)
        c = Cluster(redis_server.url, rules, tmp_path, clock)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.stop()


def traffic(rng: random.Random, start: float, end: float, n: int) -> list[Event]:
    events = []
    for i in range(n):
        t = start + (end - start) * i / n
        dep = i % 4
        failed = rng.random() < (0.4 if dep == 1 else 0.05)
        latency = rng.expovariate(1 / (6.0 if dep == 1 else 1.0))
        events.append(Event(Kind.REQUEST, t, model_group="gpt-lab", deployment=f"dep-{dep}",
                            aws_region=("us-east-1", "eu-west-1")[dep % 2],
                            status="failure" if failed else "success", status_code="429" if failed else "200",
                            rate_limited=failed, latency=latency, total_tokens=0 if failed else rng.randint(10, 200),
                            remaining_requests=float(rng.randint(0, 100)), limit_requests=100.0))
    return events


def values(engine: RuleEngine, now: float) -> dict[str, dict[tuple[str, ...], float]]:
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for rule_id, runtime in engine.rules.items():
        if not isinstance(runtime, CompiledRule):
            continue
        vals, cond, view, _thr = runtime.compute(now)
        absent = runtime.rule.aggregate == "absent"
        got = {}
        for row in range(view.n):
            key = view.keys[row]
            if key is not None and not math.isnan(vals[row]) and (cond[row] if absent else view.count[row] > 0):
                got[key] = float(vals[row])
        out[rule_id] = got
    return out


def firing(alerts: list[Any]) -> set[tuple[tuple[str, str], ...]]:
    return {tuple(sorted(a.labels.items())) for a in alerts if a.state == "firing"}


async def test_three_sidecars_compute_what_one_sees_with_all_traffic(cluster: Any) -> None:
    clock = FakeClock(1_790_000_000.0)
    c: Cluster = cluster(RULES, clock)
    await c.start()
    assert all(isinstance(r.window, SharedWindow) for e in c.engines for r in e.rules.values()
               if isinstance(r, CompiledRule) and r.rule.scope == "global")
    assert not isinstance(c.engines[0].rules["g/LocalCount"].window, SharedWindow)
    rng = random.Random(7)
    now = clock.now
    # dep-9 only spoke long ago: the global `absent` rule must see it on every sidecar
    c.feed([Event(Kind.REQUEST, now - 100, model_group="gpt-lab", deployment="dep-9", aws_region="us-east-1",
                  status="success", latency=0.5)])
    c.feed(traffic(rng, now - 240, now - 1, 1200))
    for step in range(3):
        now = clock.advance(15)
        c.feed(traffic(rng, now - 14, now, 200))
        await c.settle()
        reference_alerts = await c.reference.evaluate_group("g", now)
        expected = values(c.reference, now)
        assert expected["g/Silent"] == {("gpt-lab", "dep-9", "us-east-1"): pytest.approx(115 + 15 * step)}
        for engine in c.engines:
            alerts = await engine.evaluate_group("g", now)
            got = values(engine, now)
            for rule_id, want in expected.items():
                if rule_id == "g/LocalCount":  # local scope: this sidecar's third only
                    assert sum(got[rule_id].values()) < sum(want.values())
                    continue
                assert got[rule_id].keys() == want.keys(), rule_id
                for key, value in want.items():
                    assert got[rule_id][key] == pytest.approx(value, rel=1e-9, abs=1e-9), (step, rule_id, key)
            assert firing(alerts) == firing(reference_alerts), step
    assert firing(reference_alerts)  # the traffic does trip some rules
    sample = c.engines[0].rules["g/SlowP95"].window
    assert isinstance(sample, SharedWindow) and sample.refreshes == 3 and sample.refresh_failures == 0


async def test_global_streak_resets_on_a_success_anywhere(cluster: Any) -> None:
    clock = FakeClock(1_790_000_000.0)
    c: Cluster = cluster(STREAK_RULES, clock)
    await c.start()
    now = clock.now

    def err(i: int, ok: bool = False) -> Event:
        return Event(Kind.REQUEST, now - 60 + i, deployment="dep-1", status="success" if ok else "failure")

    c.feed([err(i) for i in range(6)])  # 2 failures per sidecar, 6 in a row across the service
    await c.settle()
    alerts = [await e.evaluate_group("s", now) for e in c.engines]
    assert all(firing(a) == {(("alertname", "Streak"), ("deployment", "dep-1"))} for a in alerts)
    assert all(a[0].value == 6.0 for a in alerts)
    # one success on one sidecar resets the service's streak, then two failures elsewhere
    c.engines[1].handle([err(10, ok=True)])
    now = clock.advance(15)
    await c.engines[1].evaluate_group("s", now)  # flushes the reset
    c.engines[2].handle([err(12), err(13)])
    await c.settle()
    for engine in c.engines:
        await engine.evaluate_group("s", now)
        streak = engine.rules["s/Streak"].compute(now)[0]
        assert streak.tolist() == [2.0]


async def test_redis_down_global_rules_go_on_with_what_they_know(cluster: Any, redis_server: RedisServer) -> None:
    clock = FakeClock(1_790_000_000.0)
    c: Cluster = cluster(RULES, clock)
    await c.start()
    rng = random.Random(3)
    now = clock.now
    first = traffic(rng, now - 100, now - 50, 300)
    c.feed(first)
    await c.settle()
    for engine in c.engines:
        await engine.evaluate_group("g", now)
    throttled = values(c.reference, now)["g/Throttled"]
    assert values(c.engines[0], now)["g/Throttled"] == throttled
    redis_server.close()
    for state in c.states:
        await until(lambda s=state: not s.up, what="backend down")
    later = traffic(rng, now - 40, now, 90)
    c.feed(later)
    now = clock.advance(5)
    own = [e for i, e in enumerate(later) if i % 3 == 0 and e.rate_limited]
    alerts = await c.engines[0].evaluate_group("g", now)  # no crash, no wait
    got = values(c.engines[0], now)["g/Throttled"]
    # the global picture from before the outage + this sidecar's own traffic since
    for key, value in got.items():
        mine = sum(1 for e in own if (e.model_group, e.deployment, e.aws_region) == key)
        assert value == throttled.get(key, 0) + mine
    assert alerts is not None
    window = c.engines[0].rules["g/Throttled"].window
    assert isinstance(window, SharedWindow) and window.refresh_failures >= 1
    assert np.isfinite(list(got.values())).all()


async def test_only_global_alerts_are_kept_in_the_shared_state(cluster: Any, redis_server: RedisServer) -> None:
    """A local alert saved by one task must not be restored (and later resolved) by another task."""
    clock = FakeClock(1_790_000_000.0)
    rules = """
groups:
  - name: p
    interval: 15s
    rules:
      - {alert: GlobalThrottled, signal: rate_limited, aggregate: count, over: 5m, by: [deployment], above: 0,
         scope: global}
      - {alert: LocalThrottled, signal: rate_limited, aggregate: count, over: 5m, by: [deployment], above: 0,
         scope: local}
"""
    c: Cluster = cluster(rules, clock)
    await c.start()
    now = clock.now
    c.engines[0].handle([Event(Kind.REQUEST, now - 5, deployment="dep-1", status="failure", rate_limited=True)])
    alerts = await c.engines[0].evaluate_group("p", now)
    assert {a.name for a in alerts} == {"GlobalThrottled", "LocalThrottled"}
    doc = await c.states[1].get_json("gatewatch:rules:alerts:p")
    assert list(doc) == ["p/GlobalThrottled"]
    restarted = RuleEngine(RuleEngineConfig(), list(c.engines[1].locations or []), c.states[1], clock=clock,
                           run_loops=False)
    restarted.shared_windows = shared_window_factory(c.states[1])
    await restarted.start()
    assert [a.labels["alertname"] for _r, a in restarted.active_alerts()] == ["GlobalThrottled"]
