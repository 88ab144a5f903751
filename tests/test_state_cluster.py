"""Three `gatewatch run` processes, one redis-server, one webhook receiver: many tasks, one truth.

LiteLLM runs as several ECS tasks behind a load balancer, so each sidecar sees a slice of
the traffic. Here the real generic_api captures (times moved to now, ids made unique per
post) are split across three sidecars, and the receiver process must see:

- a budget over all traffic fire once, with the total computed from the captures, and
  not before the last increment arrived;
- a 429 storm that no single sidecar sees enough of (a `scope: global` rule) page once
  and resolve once;
- a sidecar SIGKILLed while holding a notification claim: another one delivers (the
  resolve after a delivered page; the page itself when it died before delivering);
- Redis stopped for 30 s while traffic goes on: not one budget increment lost.

Every test runs twice: against one redis-server, and against a Redis Cluster of three
primaries with TLS and a password (as ElastiCache Serverless is), shared by the module
and emptied between tests. tests/test_state_cluster_failover.py adds replicas and kills a
primary during a storm.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster_support import (
    STORM_CAPTURE,
    Sidecar,
    Sidecars,
    fixture_sum,
    notifications,
    receiver_fixture,  # noqa: F401  (the `receiver` fixture)
    retimed_body,
    storm_rules_yaml,
)
from tests.conftest import batch_files
from tests.notify_support import ReceiverProcess, until
from tests.redis_cluster_support import REDIS_CLI, RedisClusterServer
from tests.redis_support import RedisServer, requires_redis

pytestmark = [pytest.mark.integration, pytest.mark.slow, requires_redis]


def rules_yaml(budget_limit: float, storm_above: int) -> str:
    budget = f"""
groups:
  - name: budget
    interval: 1s
    rules:
      - alert: GptLabBudget
        budget:
          signal: cost_usd
          by: [model_group]
          where: {{model_group: gpt-lab}}
          period: day
          limit: {budget_limit!r}
          thresholds: [1.0]
        labels: {{severity: warning}}
        annotations: {{summary: "gpt-lab spent {{{{ spend }}}} of {{{{ limit }}}}"}}"""
    return budget + storm_rules_yaml(storm_above, "6s")


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    if REDIS_CLI is None:
        pytest.skip("redis-cli not installed")
    cluster = RedisClusterServer(tmp_path_factory.mktemp("redis-cluster")).create()
    yield cluster
    cluster.close()


@pytest.fixture(params=["node", "cluster"])
def redis_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "cluster":
        cluster: RedisClusterServer = request.getfixturevalue("shared_cluster")
        cluster.flushall()
        yield cluster
        return
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.close()


class Cluster:
    def __init__(self, sidecars: list[Sidecar]) -> None:
        self.sidecars = sidecars

    @property
    def alive(self) -> list[Sidecar]:
        return [s for s in self.sidecars if s.alive]

    async def post_round_robin(self, bodies: list[bytes], start: int = 0) -> None:
        live = self.alive
        for i, body in enumerate(bodies):
            await live[(start + i) % len(live)].post(body)

    async def metric_by_sidecar(self, name: str, **labels: str) -> dict[str, float]:
        return {s.task_id: await s.metric(name, **labels) for s in self.alive}


@pytest.fixture
async def cluster(tmp_path: Path, redis_server: Any, receiver: ReceiverProcess) -> AsyncIterator[Any]:
    sidecars = Sidecars(tmp_path, redis_server, receiver.url("/hook"))

    async def start(budget_limit: float = 1e9, storm_above: int = 1000, n: int = 3) -> Cluster:
        return Cluster(await sidecars.start(rules_yaml(budget_limit, storm_above), n))

    yield start
    sidecars.stop()


def spend_bodies(rounds: int) -> list[bytes]:
    """Every batch capture, `rounds` times, as new requests (the spend in them adds up)."""
    return [retimed_body(f.name, f"r{r}") for r in range(rounds) for f in batch_files()]


def storm_bodies(tag: str, n: int = 3) -> list[bytes]:
    return [retimed_body(STORM_CAPTURE, f"{tag}-{i}") for i in range(n)]


async def settle(receiver: ReceiverProcess, seconds: float = 3.0) -> list[dict[str, Any]]:
    """Give duplicates time to show up (this is a check that something does NOT happen)."""
    await asyncio.sleep(seconds)
    return await receiver.accepted()


def redis_total(server: Any, model_group: str = "gpt-lab") -> float:
    client = server.client()
    total = 0.0
    for key in client.scan_iter(match="gw:test:ctr:*"):
        total += float(client.hget(key, f'["{model_group}"]') or 0.0)
    return total


async def test_global_budget_fires_once_at_the_right_total(cluster: Any, receiver: ReceiverProcess,
                                                           redis_server: Any) -> None:
    bodies = spend_bodies(rounds=3)
    expected, smallest = fixture_sum(bodies, "cost_usd", "gpt-lab")
    assert expected > 0 and smallest > 0
    limit = expected - smallest / 2  # crossed only once every increment is counted
    c: Cluster = await cluster(budget_limit=limit)
    last = next(i for i in range(len(bodies) - 1, -1, -1) if fixture_sum([bodies[i]], "cost_usd", "gpt-lab")[0])
    await c.post_round_robin(bodies[:last] + bodies[last + 1:])
    before, _ = fixture_sum(bodies[:last] + bodies[last + 1:], "cost_usd", "gpt-lab")
    await until(lambda: abs(redis_total(redis_server) - before) < 1e-12, what="all but one batch counted in redis")
    pages = await settle(receiver, 2.5)
    assert notifications(pages, "GptLabBudget") == []  # below the limit on every sidecar
    await c.sidecars[1].post(bodies[last])
    await until(lambda: _budget_pages(receiver), limit=30, what="the budget notification")
    pages = notifications(await settle(receiver), "GptLabBudget")
    assert len(pages) == 1, pages  # three sidecars see the total, one page
    (alert,) = pages[0]["alerts"]
    assert alert["status"] == "firing"
    assert alert["labels"]["model_group"] == "gpt-lab" and alert["labels"]["threshold"] == "100%"
    assert alert["value"] == pytest.approx(expected, rel=1e-9)
    assert redis_total(redis_server) == pytest.approx(expected, rel=1e-12)
    sent = await c.metric_by_sidecar("gatewatch_notifications_total", outcome="sent")
    deduplicated = await c.metric_by_sidecar("gatewatch_notifications_total", outcome="deduplicated")
    assert sorted(sent.values()) == [0.0, 0.0, 1.0]
    assert all(deduplicated[t] >= 1 for t, n in sent.items() if n == 0)


async def _budget_pages(receiver: ReceiverProcess) -> list[dict[str, Any]]:
    return notifications(await receiver.accepted(), "GptLabBudget")


async def test_429_storm_seen_by_all_three_pages_once_and_resolves_once(cluster: Any,
                                                                        receiver: ReceiverProcess) -> None:
    per_post, _ = fixture_sum(storm_bodies("x", 1), "rate_limited", "gpt-lab")
    assert per_post >= 2
    # above what any one sidecar sees, below what the three see together
    c: Cluster = await cluster(storm_above=int(2 * per_post))
    await c.post_round_robin(storm_bodies("storm"))
    await until(lambda: _storm(receiver, "firing"), limit=30, what="the storm page")
    await until(lambda: _storm(receiver, "resolved"), limit=30, what="the resolve")
    pages = notifications(await settle(receiver), "RateLimitStorm")
    assert [p["status"] for p in pages] == ["firing", "resolved"], pages
    (firing,) = pages[0]["alerts"]
    assert firing["labels"]["model_group"] == "gpt-lab" and firing["value"] == 3 * per_post
    (resolved,) = pages[1]["alerts"]
    assert resolved["status"] == "resolved" and resolved["fingerprint"] == firing["fingerprint"]
    # every sidecar evaluated the global window: each one fired and resolved, two were deduplicated each time
    assert sum((await c.metric_by_sidecar("gatewatch_notifications_total", outcome="sent")).values()) == 2
    assert sum((await c.metric_by_sidecar("gatewatch_notifications_total", outcome="deduplicated")).values()) >= 4


async def _storm(receiver: ReceiverProcess, status: str) -> bool:
    return any(p["status"] == status for p in notifications(await receiver.accepted(), "RateLimitStorm"))


async def test_killing_the_holder_after_the_page_another_sends_the_resolve(cluster: Any,
                                                                           receiver: ReceiverProcess) -> None:
    per_post, _ = fixture_sum(storm_bodies("x", 1), "rate_limited", "gpt-lab")
    c: Cluster = await cluster(storm_above=int(2 * per_post))
    await c.post_round_robin(storm_bodies("storm"))
    await until(lambda: _storm(receiver, "firing"), limit=30, what="the storm page")
    sent = await c.metric_by_sidecar("gatewatch_notifications_total", outcome="sent")
    (holder,) = [s for s in c.sidecars if sent[s.task_id] == 1.0]
    holder.kill9()
    await until(lambda: _storm(receiver, "resolved"), limit=30, what="the resolve from a survivor")
    pages = notifications(await settle(receiver), "RateLimitStorm")
    assert [p["status"] for p in pages] == ["firing", "resolved"], pages
    survivors = await c.metric_by_sidecar("gatewatch_notifications_total", outcome="sent")
    assert holder.task_id not in survivors and sorted(survivors.values()) == [0.0, 1.0]


async def test_killing_the_holder_before_it_delivered_hands_the_page_over(cluster: Any,
                                                                          receiver: ReceiverProcess) -> None:
    per_post, _ = fixture_sum(storm_bodies("x", 1), "rate_limited", "gpt-lab")
    await receiver.control(mode="status", status=503, count=-1)  # the holder cannot deliver
    c: Cluster = await cluster(storm_above=int(2 * per_post))
    rounds = 0

    async def storm() -> None:
        nonlocal rounds
        rounds += 1
        await c.post_round_robin(storm_bodies(f"storm{rounds}"), start=rounds)

    await storm()

    async def holder_found() -> Sidecar | None:
        retrying = await c.metric_by_sidecar("gatewatch_notifications_total", outcome="retry")
        holders = [s for s in c.sidecars if retrying[s.task_id] > 0]
        return holders[0] if len(holders) == 1 else None

    holder = await until(holder_found, limit=30, what="one sidecar claiming and retrying the page")
    others = [s for s in c.sidecars if s is not holder]

    async def others_deduplicated() -> bool:
        return all([await s.metric("gatewatch_notifications_total", outcome="deduplicated") >= 1 for s in others])

    await until(others_deduplicated, limit=10, what="the other two losing the claim")
    holder.kill9()
    killed_at = time.monotonic()
    await receiver.control(mode="ok")

    async def delivered() -> bool:
        await storm()  # the storm goes on, so the alert keeps firing
        return any(p["status"] == "firing" for p in notifications(await receiver.accepted(), "RateLimitStorm"))

    await until(delivered, limit=30, interval=1.0, what="a survivor taking the page over")
    took = time.monotonic() - killed_at
    pages = notifications(await settle(receiver), "RateLimitStorm")
    assert [p["status"] for p in pages] == ["firing"], pages
    taken = await c.metric_by_sidecar("gatewatch_notifications_total", outcome="taken_over")
    assert sorted(taken.values()) == [0.0, 1.0]
    assert took < 3 * 3 + 5  # within a few leases (claim_ttl 3s), not repeat_interval (1h)


async def test_redis_down_30s_loses_no_budget_increment(cluster: Any, receiver: ReceiverProcess,
                                                        redis_server: Any) -> None:
    first, during = spend_bodies(rounds=1), [retimed_body(f.name, f"out{r}") for r in range(2) for f in batch_files()]
    expected, smallest = fixture_sum(first + during, "cost_usd", "gpt-lab")
    before, _ = fixture_sum(first, "cost_usd", "gpt-lab")
    c: Cluster = await cluster(budget_limit=expected - smallest / 2)
    await c.post_round_robin(first)
    await until(lambda: abs(redis_total(redis_server) - before) < 1e-12, what="the first round in redis")
    evaluations = await c.sidecars[0].metric("gatewatch_rule_evaluations_total")
    redis_server.shutdown(save=True)
    down_at = time.monotonic()
    for i, body in enumerate(during):  # traffic goes on during the outage
        await c.alive[i % 3].post(body)
        await asyncio.sleep(0.5)

    async def all_degraded() -> bool:
        up = await c.metric_by_sidecar("gatewatch_state_backend_up")
        return set(up.values()) == {0.0}

    await until(all_degraded, limit=20, what="every sidecar noticing")
    status, readyz = await c.sidecars[0].get("/readyz")
    assert status == 200 and '"degraded:' in readyz  # still ready: metrics and local rules go on
    queued = await c.metric_by_sidecar("gatewatch_state_queued_increments")
    assert sum(queued.values()) >= 1
    assert await c.sidecars[0].metric("gatewatch_rule_evaluations_total") > evaluations
    assert notifications(await receiver.accepted(), "GptLabBudget") == []  # no sidecar alone crosses the limit
    await asyncio.sleep(max(0.0, 30.0 - (time.monotonic() - down_at)))
    assert all(s.alive for s in c.sidecars)
    redis_server.start()  # same port, its data back from the dump

    async def caught_up() -> bool:
        up = await c.metric_by_sidecar("gatewatch_state_backend_up")
        queued = await c.metric_by_sidecar("gatewatch_state_queued_increments")
        return set(up.values()) == {1.0} and sum(queued.values()) == 0

    await until(caught_up, limit=30, what="every sidecar flushing its queue")
    assert redis_total(redis_server) == pytest.approx(expected, rel=1e-12)
    await until(lambda: _budget_pages(receiver), limit=30, what="the budget page after the outage")
    pages = notifications(await settle(receiver), "GptLabBudget")
    assert len(pages) == 1 and pages[0]["alerts"][0]["value"] == pytest.approx(expected, rel=1e-9)
    dropped = await c.metric_by_sidecar("gatewatch_state_dropped_increments_total")
    assert set(dropped.values()) == {0.0}
