"""The Redis state backend against a real Redis Cluster: 3 primaries with a replica each, TLS, a password.

One cluster for the module (created once, ~15 s); each test uses its own key prefix. The
failover test comes last: it kills a primary (its replica takes over) and leaves the
cluster running on the promoted replica.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent.config import parse_config
from agent.configtypes import ConfigError
from agent.state.base import StateUnavailable
from agent.state.redis import RedisState
from agent.state.slots import group_by_tag, hash_tag
from tests.notify_support import until
from tests.redis_cluster_support import REDIS_CLI, RedisClusterServer
from tests.redis_support import requires_redis

pytestmark = [pytest.mark.integration, pytest.mark.slow, requires_redis,
              pytest.mark.skipif(REDIS_CLI is None, reason="redis-cli not installed")]


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    cluster = RedisClusterServer(tmp_path_factory.mktemp("redis-cluster"), replicas=1).create()
    yield cluster
    cluster.close()


def make_state(cluster: RedisClusterServer, tmp_path: Path, prefix: str, name: str = "a",
               registry: CollectorRegistry | None = None, **state: Any) -> RedisState:
    cfg = parse_config({"state": {**cluster.state_config(), "key_prefix": prefix, "flush_interval": "100ms",
                                  "timeout": "1s", "connect_timeout": "1s", **state}}).state
    return RedisState(cfg, registry, tmp_path / f"state-{name}")


def _calls(node: Any, command: str) -> int:
    stats = node.node_client().info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def total(cluster: RedisClusterServer, key: str, field: str) -> float:
    return float(cluster.client().hget(key, field) or 0.0)


# -- key layout (no Redis) ---------------------------------------------------------------------
def test_every_script_and_transaction_stays_in_one_slot() -> None:
    from redis.crc import key_slot

    cfg = parse_config({"state": {"url": "redis://x:6379", "key_prefix": "gw:"}}).state
    state = RedisState(cfg)
    window = [state.key("win", "storm|{\"by\": [\"model_group\"]}") + f":{b}" for b in range(5)]
    keys = [*window, window[0][:-2] + ":l", state.key("ctr", "budget:2026-12"), state.key("ctr", "x}{y")]
    groups = group_by_tag(keys)
    assert len(groups) == 3  # one window, two budgets
    for tag, members in groups:
        from agent.state.slots import seq_key

        assert {key_slot(k.encode()) for k in [*members, seq_key("gw:", tag, "inst")]} == {
            key_slot(members[0].encode())}
    assert hash_tag(state.key("doc", "notify/silences/a")) == hash_tag(state.key("docs", "index")) == "doc"
    assert state.key("ctr", "x}{y") != state.key("ctr", "x)(y")  # escaping is one-to-one
    with pytest.raises(ConfigError, match=r"state.key_prefix: expected no \{ or \}"):
        parse_config({"state": {"url": "redis://x:6379", "key_prefix": "{gw}:"}})
    with pytest.raises(ConfigError, match=r"state\.url: Redis Cluster has only database 0"):
        parse_config({"state": {"url": "redis://x:6379/2", "cluster": True}})


# -- against the cluster -----------------------------------------------------------------------
async def test_auto_detects_the_cluster_over_tls_with_a_password(redis_cluster: RedisClusterServer,
                                                                  tmp_path: Path) -> None:
    registry = CollectorRegistry()
    state = make_state(redis_cluster, tmp_path, "gw:detect:", registry=registry)
    await state.start()
    try:
        assert state.up and state.cluster is True
        ok, detail = state.healthy()
        assert ok and "up" in detail and redis_cluster.password not in detail
        await state.put_json("notify/silences/s1", {"id": "s1"})
        await state.put_json("notify/nflog/x", [1])
        assert await state.list_json("notify/silences/") == {"notify/silences/s1": {"id": "s1"}}
        await state.delete("notify/silences/s1")
        assert await state.list_json("notify/") == {"notify/nflog/x": [1]}
        assert registry.get_sample_value("gatewatch_state_backend_up") == 1.0
    finally:
        await state.stop(time.monotonic() + 30)
    # a wrong password is "down", with the reason, never the password
    bad = make_state(redis_cluster, tmp_path, "gw:detect:", name="bad", password="wrong-password-xyz")
    await bad.start()
    try:
        ok, detail = bad.healthy()
        assert ok and detail.startswith("degraded:") and "wrong-password-xyz" not in detail
        assert not bad.up
    finally:
        await bad.stop(time.monotonic() + 30)


async def test_counters_from_three_sidecars_spread_over_the_primaries(redis_cluster: RedisClusterServer,
                                                                      tmp_path: Path) -> None:
    states = [make_state(redis_cluster, tmp_path, "gw:ctr:", name=str(i)) for i in range(3)]
    for s in states:
        await s.start()
    try:
        budgets = [f"budget-{i}:2026-12" for i in range(12)]
        primaries = {redis_cluster.primary_of(states[0].key("ctr", b)).port for b in budgets}
        assert len(primaries) >= 2  # the keys really live on several shards
        for round_ in range(20):
            for i, s in enumerate(states):
                for b in budgets:
                    await s.incr_many(b, {'["team-a"]': 0.25, f'["team-{i}"]': 1.0})
            if round_ % 5 == 0:
                await asyncio.gather(*(s.send_queue() for s in states))
        for s in states:
            await s.send_queue()
        for b in budgets:
            got = await states[1].get_counters(b)
            assert got == {'["team-a"]': 15.0, '["team-0"]': 20.0, '["team-1"]': 20.0, '["team-2"]': 20.0}
        waits = 0
        for node in redis_cluster.primaries():  # every flush waited for the shard's replica
            waits += int(node.node_client().info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
        assert waits >= 3
    finally:
        for s in states:
            await s.stop(time.monotonic() + 30)


async def test_claims_are_exclusive_on_the_cluster(redis_cluster: RedisClusterServer, tmp_path: Path) -> None:
    a = make_state(redis_cluster, tmp_path, "gw:claim:", name="a")
    b = make_state(redis_cluster, tmp_path, "gw:claim:", name="b")
    await a.start()
    await b.start()
    try:
        for i in range(20):  # keys on every shard
            assert await a.claim(f"page-{i}", "task-a", 30.0)
            assert not await b.claim(f"page-{i}", "task-b", 30.0)
            assert await a.claim(f"page-{i}", "task-a", 30.0)  # extend its own
        await a.release("page-0", "task-a")
        assert await b.claim("page-0", "task-b", 30.0)
    finally:
        await a.stop(time.monotonic() + 30)
        await b.stop(time.monotonic() + 30)


async def test_a_slot_moving_to_another_primary_mid_traffic_loses_nothing(redis_cluster: RedisClusterServer,
                                                                          tmp_path: Path) -> None:
    """MOVED and ASK: the budget's slot migrates (as a resharding does) while increments go on."""
    from redis.crc import key_slot

    state = make_state(redis_cluster, tmp_path, "gw:moved:")
    await state.start()
    try:
        key = state.key("ctr", "spend:2026-12")
        slot = key_slot(key.encode())
        for _ in range(10):
            await state.incr_many("spend:2026-12", {"team": 0.5})
            await state.send_queue()
        source = redis_cluster.primary_of(key)
        target = next(n for n in redis_cluster.primaries() if n.port != source.port)
        src, dst = source.node_client(), target.node_client()
        src_id, dst_id = src.execute_command("CLUSTER", "MYID"), dst.execute_command("CLUSTER", "MYID")
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        names = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        assert key in names  # the budget hash and this process's sequence key move together
        src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "AUTH", redis_cluster.password,
                            "KEYS", *names)
        asking = _calls(target, "asking")
        # half-way: the source no longer has the keys, so it answers ASK and the client asks the target
        for _ in range(10):
            await state.incr_many("spend:2026-12", {"team": 0.5})
            await state.send_queue()
        assert _calls(target, "asking") > asking
        for node in redis_cluster.primaries():  # replicas learn it from their primaries
            node.node_client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        for _ in range(10):  # now every command for the slot is MOVED until the client learns
            await state.incr_many("spend:2026-12", {"team": 0.5})
            with_retry = 0
            while True:
                try:
                    await state.send_queue()
                    break
                except StateUnavailable:
                    with_retry += 1
                    assert with_retry < 50
                    await asyncio.sleep(0.1)
                    await state._probe()

        async def all_in() -> bool:
            try:
                return (await state.get_counters("spend:2026-12")).get("team") == 15.0
            except StateUnavailable:
                await state._probe()
                return False

        await until(all_in, limit=30, what="30 increments of 0.5 counted once")
        assert redis_cluster.primary_of(key).port == target.port
        assert total(redis_cluster, key, "team") == 15.0
    finally:
        await state.stop(time.monotonic() + 30)


async def test_a_claim_waits_out_one_failover_but_not_a_whole_outage(redis_cluster: RedisClusterServer,
                                                                     tmp_path: Path) -> None:
    """During an outage the first claim waits `failover_timeout`; later ones fail at once (then: send anyway)."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    # flush_interval long: no background probe during the test (the simulated outage is the claims' only)
    state = make_state(redis_cluster, tmp_path, "gw:outage:", failover_timeout="1s", flush_interval="60s")
    await state.start()
    try:
        async def unreachable(*_args: Any) -> Any:
            raise RedisConnectionError("Connection refused (simulated: every node away)")

        state._confirmed_eval = unreachable  # type: ignore[method-assign]
        started = time.monotonic()
        with pytest.raises(StateUnavailable):
            await state.claim("page-1", "task-a", 30.0)
        assert time.monotonic() - started >= 1.0  # waited for a failover that did not come
        started = time.monotonic()
        with pytest.raises(StateUnavailable):
            await state.claim("page-2", "task-a", 30.0)
        assert time.monotonic() - started < 0.5  # the same outage: no second wait
        del state._confirmed_eval
        await state._probe()  # Redis answers again: the next outage gets its wait again
        assert state.up and await state.claim("page-3", "task-a", 30.0)
    finally:
        await state.stop(time.monotonic() + 30)


async def test_primary_killed_mid_traffic_replica_takes_over_nothing_lost_or_doubled(
        redis_cluster: RedisClusterServer, tmp_path: Path) -> None:
    """SIGKILL of the primary that holds a budget and a claim; its replica is promoted.

    Increments go on during the failover: every one counts once (WAIT kept each batch until a
    replica had it; the retry after the promotion is skipped where it landed). The claim taken
    before the kill is still held: the other sidecar, asking during the failover, waits and loses.
    """
    a = make_state(redis_cluster, tmp_path, "gw:failover:", name="a", failover_timeout="30s")
    b = make_state(redis_cluster, tmp_path, "gw:failover:", name="b", failover_timeout="30s")
    await a.start()
    await b.start()
    try:
        key = a.key("ctr", "spend:2026-12")
        victim = redis_cluster.primary_of(key)
        claim_name = next(f"page-{i}" for i in range(1000)
                          if redis_cluster.primary_of(a.key("claim", f"page-{i}")).port == victim.port)
        assert await a.claim(claim_name, "task-a", 120.0)
        sent = 0
        for _ in range(20):
            for s in (a, b):
                await s.incr_many("spend:2026-12", {"team": 0.25})
                sent += 1
            await asyncio.gather(a.send_queue(), b.send_queue())
        victim.kill()
        killed = time.monotonic()
        claim_b = asyncio.create_task(b.claim(claim_name, "task-b", 120.0))
        while time.monotonic() - killed < 8.0 or not (a.up and b.up):  # traffic goes on through the failover
            for s in (a, b):
                await s.incr_many("spend:2026-12", {"team": 0.25})
                sent += 1
                if not s.up:
                    await s._probe()
                else:
                    try:
                        await s.send_queue()
                    except StateUnavailable:
                        pass
            await asyncio.sleep(0.1)
            assert time.monotonic() - killed < 60, "no failover within 60 s"
        assert await claim_b is False  # the claim survived the failover: no second sender
        assert redis_cluster.primary_of(key).port != victim.port

        async def caught_up() -> bool:
            for s in (a, b):
                try:
                    await s.send_queue()
                except StateUnavailable:
                    await s._probe()
                    return False
            return a.queued() == 0 and b.queued() == 0

        await until(caught_up, limit=30, what="both sidecars flushed")
        assert total(redis_cluster, key, "team") == pytest.approx(sent * 0.25, abs=1e-9)
        assert (await b.get_counters("spend:2026-12"))["team"] == pytest.approx(sent * 0.25, abs=1e-9)
    finally:
        await a.stop(time.monotonic() + 30)
        await b.stop(time.monotonic() + 30)
