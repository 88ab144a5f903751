"""The Redis state backend against a real redis-server: documents, counters, claims, outages.

Every test runs its own redis-server on a random loopback port. Outage tests stop it
(SHUTDOWN SAVE, restart on the same port) or freeze it (SIGSTOP) while increments keep
coming, then check the totals in Redis against the increments made.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent.config import parse_config
from agent.configtypes import ConfigError
from agent.state.base import StateUnavailable
from agent.state.increments import ADD, LATEST, MAX, MIN, SET, IncrementBatch, IncrementQueue, KeyOps
from agent.state.redis import RedisState
from tests.notify_support import until
from tests.redis_support import RedisServer, requires_redis, self_signed

pytestmark = [pytest.mark.integration, requires_redis]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.close()


def make_state(url: str, tmp_path: Path, name: str = "a", registry: CollectorRegistry | None = None,
               **state: Any) -> RedisState:
    cfg = parse_config({"state": {"url": url, "flush_interval": "100ms", "timeout": "500ms",
                                  "connect_timeout": "500ms", **state}}).state
    return RedisState(cfg, registry, tmp_path / f"state-{name}")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# -- the queue (no Redis) --------------------------------------------------------------------
def test_queue_merges_per_field_and_is_bounded() -> None:
    q = IncrementQueue(limit=3)
    assert q.add("k", "a", ADD, 1.5) and q.add("k", "a", ADD, 2.5)
    assert q.add("k", "lo", MIN, 5.0) and q.add("k", "lo", MIN, 3.0) and q.add("k", "lo", MIN, 4.0)
    assert q.add("k2", "t", LATEST, (10.0, 1.0)) and q.add("k2", "t", LATEST, (9.0, 2.0))
    assert len(q) == 3
    assert not q.add("k3", "x", ADD, 1.0)  # full: a new field is refused and counted
    assert q.add("k", "a", ADD, 1.0)  # an existing field still merges
    assert not q.add("k", "nan", ADD, float("nan"))
    assert q.dropped_full == 1 and q.dropped_invalid == 1
    assert q.keys["k"].fields == {"a": [ADD, 5.0], "lo": [MIN, 3.0]}
    assert q.keys["k2"].fields == {"t": [LATEST, (10.0, 1.0)]}
    assert q.amounts("k") == {"a": 5.0}


def test_queue_set_then_add_and_batches() -> None:
    q = IncrementQueue(limit=100)
    q.add("s", "x", ADD, 2.0)
    q.add("s", "x", SET, 0.0)  # a reset wins over earlier adds ...
    q.add("s", "x", ADD, 3.0)  # ... and later adds count from it
    q.add("s", "hi", MAX, 1.0)
    q.add("s", "hi", MAX, 7.0)
    assert q.keys["s"].fields == {"x": [SET, 3.0], "hi": [MAX, 7.0]}
    for i in range(10):
        q.add(f"k{i % 3}", f"f{i}", ADD, float(i), ttl=60.0, deadline=time.time() + 60)
    seq = iter(range(1, 100))
    batches = q.take("inst", seq, max_fields=4)
    assert [len(b) for b in batches] == [4, 4, 4]
    assert [b.seq for b in batches] == [1, 2, 3]
    assert sum(len(ops.fields) for b in batches for ops in b.keys.values()) == 12
    assert len(q) == 0 and q.keys == {}


def test_queue_prunes_expired() -> None:
    q = IncrementQueue(limit=100)
    q.add("old", "a", ADD, 1.0, deadline=100.0)
    q.add("old", "b", ADD, 1.0, deadline=100.0)
    q.add("new", "a", ADD, 1.0, deadline=300.0)
    assert q.prune(200.0) == 2
    assert list(q.keys) == ["new"] and len(q) == 1 and q.dropped_expired == 2


# -- documents ----------------------------------------------------------------------------
async def test_json_documents_list_by_prefix_and_expire(redis_server: RedisServer, tmp_path: Path) -> None:
    state = make_state(redis_server.url, tmp_path)
    await state.start()
    try:
        await state.put_json("notify/silences/s1", {"id": "s1", "n": 1})
        await state.put_json("notify/silences/s2", {"id": "s2"}, ttl=0.3)
        await state.put_json("notify/nflog/x", [1, 2])
        assert await state.get_json("notify/silences/s1") == {"id": "s1", "n": 1}
        assert await state.get_json("missing") is None
        assert await state.list_json("notify/silences/") == {"notify/silences/s1": {"id": "s1", "n": 1},
                                                             "notify/silences/s2": {"id": "s2"}}
        await asyncio.sleep(0.5)
        assert await state.list_json("notify/silences/") == {"notify/silences/s1": {"id": "s1", "n": 1}}
        await state.delete("notify/silences/s1")
        assert await state.list_json("notify/") == {"notify/nflog/x": [1, 2]}
        # everything lives under the prefix; the expired document left the index too
        client = redis_server.client()
        assert all(k.startswith("gatewatch:") for k in client.keys("*"))
        assert client.zrange("gatewatch:docs:{doc}", 0, -1) == ["notify/nflog/x"]
    finally:
        await state.stop(time.monotonic() + 30)


async def test_key_prefixes_keep_services_apart(redis_server: RedisServer, tmp_path: Path) -> None:
    a = make_state(redis_server.url, tmp_path, "a", key_prefix="gw:svc-a:")
    b = make_state(redis_server.url, tmp_path, "b", key_prefix="gw:svc-b:")
    await a.start()
    await b.start()
    try:
        await a.put_json("doc", 1)
        await a.incr_many("budget", {"team": 2.0})
        assert await a.get_counters("budget") == {"team": 2.0}
        assert await b.get_json("doc") is None and await b.get_counters("budget") == {}
        assert await b.claim("c", "b", 10) and await a.claim("c", "a", 10)  # same name, two services
    finally:
        await a.stop(time.monotonic() + 30)
        await b.stop(time.monotonic() + 30)


# -- counters -------------------------------------------------------------------------------
async def test_counters_add_up_across_sidecars(redis_server: RedisServer, tmp_path: Path) -> None:
    a, b = make_state(redis_server.url, tmp_path, "a"), make_state(redis_server.url, tmp_path, "b")
    await a.start()
    await b.start()
    try:
        await a.incr_many("spend:2026-11", {'["team-a"]': 0.25, '["team-b"]': 1.0}, ttl=3600)
        # not sent yet, but a sidecar always sees its own increments
        assert await a.get_counters("spend:2026-11") == {'["team-a"]': 0.25, '["team-b"]': 1.0}
        await b.incr_many("spend:2026-11", {'["team-a"]': 0.5})
        assert await b.get_counters("spend:2026-11") == {'["team-a"]': 0.75, '["team-b"]': 1.0}
        client = redis_server.client()
        assert {k: float(v) for k, v in client.hgetall("gatewatch:ctr:{spend:2026-11}").items()} == {
            '["team-a"]': 0.75, '["team-b"]': 1.0}
        assert 3500 < client.ttl("gatewatch:ctr:{spend:2026-11}") <= 3600
        # the background flusher sends without a read
        await a.incr_many("spend:2026-11", {'["team-a"]': 1.0})
        await until(lambda: float(client.hget("gatewatch:ctr:{spend:2026-11}", '["team-a"]')) == 1.75,
                    what="the periodic flush")
    finally:
        await a.stop(time.monotonic() + 30)
        await b.stop(time.monotonic() + 30)


async def test_a_batch_retried_after_a_lost_answer_is_applied_once(redis_server: RedisServer,
                                                                   tmp_path: Path) -> None:
    state = make_state(redis_server.url, tmp_path)
    await state.start()
    try:
        batch = IncrementBatch(state.instance, 1, {state.key("ctr", "x"): KeyOps({"f": [ADD, 1.5]}, 60.0)})
        later = IncrementBatch(state.instance, 2, {state.key("ctr", "x"): KeyOps({"f": [ADD, 2.0]}, 60.0)})
        assert await state._execute([batch], []) == ([1], [])
        # the answer was lost: the client retries the same batch, followed by a newer one
        assert await state._execute([batch, later], [state.key("ctr", "x")]) == ([0, 1], [{"f": "3.5"}])
        assert await state._execute([later], []) == ([0], [])
        other = IncrementBatch("other-process", 1, {state.key("ctr", "x"): KeyOps({"f": [ADD, 1.0]}, 60.0)})
        assert await state._execute([other], []) == ([1], [])  # sequence numbers are per process
        assert redis_server.client().hget("gatewatch:ctr:{x}", "f") == "4.5"
    finally:
        await state.stop(time.monotonic() + 30)


async def test_min_max_latest_and_set_operations(redis_server: RedisServer, tmp_path: Path) -> None:
    a, b = make_state(redis_server.url, tmp_path, "a"), make_state(redis_server.url, tmp_path, "b")
    await a.start()
    await b.start()
    try:
        key = "gatewatch:win:test"
        a.queue.add(key, "lo", MIN, 5.0)
        a.queue.add(key, "hi", MAX, 5.0)
        a.queue.add(key, "last", LATEST, (100.0, 1.0))
        a.queue.add(key, "streak", ADD, 3.0)
        await a.send_queue()
        b.queue.add(key, "lo", MIN, 7.0)
        b.queue.add(key, "hi", MAX, 9.0)
        b.queue.add(key, "last", LATEST, (99.0, 2.0))  # older than a's: ignored
        b.queue.add(key, "streak", SET, 1.0)  # b saw a miss, then one hit: the streak restarts
        (got,) = await b.flush_and_read([key])
        assert {k: float(v) for k, v in got.items() if k != "last"} == {"lo": 5.0, "hi": 9.0, "streak": 1.0}
        assert tuple(map(float, got["last"].split(":"))) == (100.0, 1.0)
    finally:
        await a.stop(time.monotonic() + 30)
        await b.stop(time.monotonic() + 30)


async def test_with_a_replica_a_flush_returns_once_the_replica_has_it(tmp_path: Path) -> None:
    """WAIT 1 ends the round trip: what the flush acknowledged survives the primary's death."""
    primary = RedisServer(tmp_path / "primary").start()
    replica = RedisServer(tmp_path / "replica", extra_args=["--replicaof", "127.0.0.1", str(primary.port)]).start()
    try:
        await until(lambda: primary.client().info("replication").get("slave0", {}).get("state") == "online",
                    limit=60, what="the replica in sync")
        state = make_state(primary.url, tmp_path)
        await state.start()
        try:
            for i in range(5):
                await state.incr_many("spend", {"team": 1.5})
                await state.send_queue()
                # no waiting: the flush returned, so the replica has it already
                assert float(replica.client().hget("gatewatch:ctr:{spend}", "team")) == 1.5 * (i + 1)
            assert await state.claim("page", "task-a", 30.0)
            assert replica.client().get("gatewatch:claim:page") == "task-a"
            assert int(primary.client().info("commandstats")["cmdstat_wait"]["calls"]) >= 6
        finally:
            await state.stop(time.monotonic() + 30)
    finally:
        replica.close()
        primary.close()


# -- claims ---------------------------------------------------------------------------------
async def test_claims_one_owner_extend_expire_release(redis_server: RedisServer, tmp_path: Path) -> None:
    state = make_state(redis_server.url, tmp_path)
    await state.start()
    try:
        results = await asyncio.gather(*(state.claim("note-1", f"task-{i}", 5) for i in range(12)))
        assert sum(results) == 1  # twelve sidecars, one sender
        owner = f"task-{results.index(True)}"
        assert await state.claim("note-1", owner, 0.4)  # its own: extended (here: shortened)
        assert not await state.claim("note-1", "task-x", 5)
        await asyncio.sleep(0.6)
        assert await state.claim("note-1", "task-x", 5)  # expired: taken over
        await state.release("note-1", owner)  # not the owner any more: no effect
        assert not await state.claim("note-1", owner, 5)
        await state.release("note-1", "task-x")
        assert await state.claim("note-1", owner, 5)
    finally:
        await state.stop(time.monotonic() + 30)


# -- outages ----------------------------------------------------------------------------------
async def test_redis_restart_loses_no_increment_and_fails_fast_meanwhile(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    registry = CollectorRegistry()
    state = make_state(server.url, tmp_path, registry=registry, max_queued_increments=1000)
    await state.start()
    try:
        total = 0.0
        for i in range(20):
            await state.incr_many("spend", {"team": 0.1 * (i + 1)})
            total += 0.1 * (i + 1)
        assert await state.get_counters("spend") == {"team": pytest.approx(total)}
        assert sample(registry, "gatewatch_state_backend_up") == 1.0
        server.shutdown(save=True)
        with pytest.raises(StateUnavailable):
            await state.claim("x", "me", 5)  # the first failure takes up to `timeout` ...
        started = time.monotonic()
        with pytest.raises(StateUnavailable):
            await state.put_json("y", 1)  # ... then calls fail at once
        assert time.monotonic() - started < 0.05
        for i in range(50):
            await state.incr_many("spend", {"team": 0.01, f"new-{i % 5}": 1.0})
            total += 0.01
        # while down: the last totals known plus what is queued
        counters = await state.get_counters("spend")
        assert counters["team"] == pytest.approx(total) and counters["new-0"] == 10.0
        ok, detail = state.healthy()
        assert ok and detail.startswith("degraded:") and "increments queued" in detail
        await until(lambda: sample(registry, "gatewatch_state_backend_up") == 0.0, what="backend down")
        assert sample(registry, "gatewatch_state_queued_increments") == 6.0
        await until(lambda: (sample(registry, "gatewatch_state_errors_total", op="connect") or 0) >= 2,
                    what="the flusher probing")
        assert sample(registry, "gatewatch_state_errors_total", op="claim") == 1.0
        server.start()  # same port, data from the dump
        await until(lambda: state.up and state.queued() == 0, limit=10, what="catch-up after restart")
        client = server.client()
        remote = {k: float(v) for k, v in client.hgetall("gatewatch:ctr:{spend}").items()}
        assert remote == {"team": pytest.approx(total), **{f"new-{i}": 10.0 for i in range(5)}}
        assert state.healthy()[1] == f"redis 127.0.0.1:{server.port}/0 up (prefix gatewatch:); 0 increments queued"
    finally:
        await state.stop(time.monotonic() + 30)
        server.close()


async def test_frozen_redis_times_out_then_applies_every_batch_once(tmp_path: Path) -> None:
    """SIGSTOP: commands sent to the frozen server run when it wakes up, after the client gave up on
    them. The retried batches carry the same sequence numbers, so nothing is counted twice."""
    server = RedisServer(tmp_path / "redis").start()
    state = make_state(server.url, tmp_path)
    await state.start()
    try:
        await state.incr_many("spend", {"team": 1.0})
        await state.send_queue()
        server.pause()
        expected = 1.0
        for i in range(30):  # spread over several flush ticks while frozen
            await state.incr_many("spend", {"team": 1.0})
            expected += 1.0
            await asyncio.sleep(0.05 if i % 10 else 0.3)
        await until(lambda: not state.up, what="timeout marks the backend down")
        server.resume()
        await until(lambda: state.up and state.queued() == 0, limit=10, what="catch-up after the freeze")
        await asyncio.sleep(0.5)  # anything still in the server's input buffers has run by now
        assert float(server.client().hget("gatewatch:ctr:{spend}", "team")) == expected
    finally:
        await state.stop(time.monotonic() + 30)
        server.close()


async def test_unsent_increments_survive_a_restart_of_the_sidecar(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    first = make_state(server.url, tmp_path, "same")
    await first.start()
    try:
        await first.incr_many("spend", {"team": 2.0})
        await first.send_queue()
        server.shutdown(save=True)
        await first.incr_many("spend", {"team": 3.0})
        with pytest.raises(StateUnavailable):
            await first.send_queue()
    finally:
        await first.stop(time.monotonic() + 30)  # Redis is down: the 3.0 goes to state_dir
    spill = tmp_path / "state-same" / "redis-pending.json"
    assert json.loads(spill.read_text())["batches"]
    server.start()
    second = make_state(server.url, tmp_path, "same")
    await second.start()
    try:
        assert await second.get_counters("spend") == {"team": 5.0}
        assert not spill.exists()
    finally:
        await second.stop(time.monotonic() + 30)
        server.close()


async def test_unreachable_at_start_then_up(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")  # not started yet
    registry = CollectorRegistry()
    state = make_state(server.url, tmp_path, registry=registry)
    await state.start()  # no crash: degraded
    try:
        assert not state.up and state.healthy()[0]
        await state.incr_many("spend", {"team": 1.0})
        server.start()
        await until(lambda: state.up and state.queued() == 0, limit=10, what="first connection")
        assert server.client().hget("gatewatch:ctr:{spend}", "team") == "1"
        assert sample(registry, "gatewatch_state_flushed_increments_total") == 1.0
    finally:
        await state.stop(time.monotonic() + 30)
        server.close()


# -- auth, TLS, config -----------------------------------------------------------------------
async def test_password_from_env_and_never_shown(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", password="s3cret-Pa55").start()
    try:
        env = {"REDIS_PASSWORD": "s3cret-Pa55", "REDIS_URL": f"redis://127.0.0.1:{server.port}/0"}
        cfg = parse_config({"state": {"url": "${REDIS_URL}", "password": "${REDIS_PASSWORD}"}}, env=env).state
        good = RedisState(cfg, None, tmp_path / "good")
        await good.start()
        assert good.up
        await good.put_json("k", {"v": 1})
        await good.stop(time.monotonic() + 30)
        wrong = parse_config({"state": {"url": f"redis://:wrong-pass@127.0.0.1:{server.port}/0"}}).state
        bad = RedisState(wrong, None, tmp_path / "bad")
        await bad.start()
        ok, detail = bad.healthy()
        assert ok and not bad.up and "wrong-pass" not in detail and "s3cret" not in detail
        assert "wrong-pass" not in repr(wrong) and "wrong-pass" not in str(bad.__dict__.get("display"))
        await bad.stop(time.monotonic() + 30)
    finally:
        server.close()


async def test_tls_rediss(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = RedisServer(tmp_path / "redis", tls=(cert, key)).start()
    try:
        state = make_state(server.url, tmp_path, tls_ca_file=str(cert))
        await state.start()
        assert state.up, state.healthy()
        await state.incr_many("spend", {"t": 1.0})
        assert await state.get_counters("spend") == {"t": 1.0}
        await state.stop(time.monotonic() + 30)
        plain = make_state(server.url, tmp_path, "untrusted")  # the system CAs do not know this cert
        await plain.start()
        assert not plain.up and "SSL" in plain.healthy()[1].upper()
        await plain.stop(time.monotonic() + 30)
    finally:
        server.close()


def test_config_errors_name_the_key_without_the_secret() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"state": {"url": "http://user:topsecret@host"}}, file="gw.yaml")
    assert str(err.value) == "gw.yaml: state.url: expected a redis://, rediss:// or unix:// URL"
    with pytest.raises(ConfigError, match=r"state.max_queued_increments: expected a positive integer"):
        parse_config({"state": {"url": "redis://h", "max_queued_increments": 0}})
    with pytest.raises(ConfigError, match=r"state.claim_ttl: expected at least 1s"):
        parse_config({"state": {"url": "redis://h", "claim_ttl": "100ms"}})
    assert not parse_config({}).state.enabled


async def test_app_selects_the_backend(gatewatch_server: Any, redis_server: RedisServer) -> None:
    import aiohttp

    gw, base = await gatewatch_server({"state": {"url": redis_server.url, "key_prefix": "gw:test:",
                                                 "flush_interval": "100ms"}})
    assert gw.state.name == "redis"
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/readyz") as response:
            body = await response.json()
        assert response.status == 200
        assert body["checks"]["state"]["detail"].startswith(
            f"redis 127.0.0.1:{redis_server.port}/0 up (prefix gw:test:)")
        redis_server.close()
        await until(lambda: not gw.state.up, what="the backend noticed")
        async with session.get(base + "/readyz") as response:
            body = await response.json()
        assert response.status == 200 and body["checks"]["state"]["ok"]  # degraded, still ready
        assert body["checks"]["state"]["detail"].startswith("degraded:")
        async with session.get(base + "/metrics") as response:
            text = await response.text()
        assert "gatewatch_state_backend_up 0.0" in text
    local, _ = await gatewatch_server({})
    assert local.state.name == "local"


async def test_a_silence_made_on_one_sidecar_mutes_on_another(gatewatch_server: Any, redis_server: RedisServer) -> None:
    import aiohttp

    shared = {"state": {"url": redis_server.url, "flush_interval": "100ms"},
              "server": {"allow_unauthenticated_writes": True},
              "notify": {"receivers": [{"name": "oncall", "webhook": {"url": "http://127.0.0.1:9/hook"}}]}}
    a, base_a = await gatewatch_server(shared)
    b, _ = await gatewatch_server(shared)
    async with aiohttp.ClientSession() as session, session.post(base_a + "/api/v1/silences", json={
            "matchers": ['deployment="gpt-lab-acct111-use1"'], "duration": "2h", "comment": "maintenance"}) as response:
        assert response.status == 200, await response.text()
        silence_id = (await response.json())["silenceID"]
    await b.notify.silences.load()  # what b's loop does every 15 s
    assert b.notify.silences.get(silence_id) is not None
    assert b.notify.silences.silenced_by({"alertname": "X", "deployment": "gpt-lab-acct111-use1"}, time.time()) == [
        silence_id]
    assert a.notify.silences.silenced_by({"alertname": "X", "deployment": "other"}, time.time()) == []
