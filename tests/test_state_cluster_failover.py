"""A Redis Cluster primary SIGKILLed during a 429 storm that three sidecars share.

Three `gatewatch run` processes, a webhook receiver process and a Redis Cluster of three
primaries with a replica each (TLS, password, node timeout 2 s). The storm starts on one
sidecar; once its window buckets are in Redis, the primary that holds them is killed and
the storm goes on through the other two while the replica takes over. The receiver must
get exactly one page and one resolve, and the page must count every rate-limited request
once: nothing lost with the dead primary, nothing applied twice by the retries.
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
from tests.notify_support import ReceiverProcess, until
from tests.redis_cluster_support import REDIS_CLI, RedisClusterServer
from tests.redis_support import requires_redis

pytestmark = [pytest.mark.integration, pytest.mark.slow, requires_redis,
              pytest.mark.skipif(REDIS_CLI is None, reason="redis-cli not installed")]


def rules_yaml(storm_above: int) -> str:
    # a window long enough to hold the whole storm across the failover (a few seconds)
    return "\ngroups:" + storm_rules_yaml(storm_above, "20s")


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterServer]:
    cluster = RedisClusterServer(tmp_path / "redis-cluster", replicas=1).create()
    yield cluster
    cluster.close()


@pytest.fixture
async def sidecars(tmp_path: Path, redis_cluster: RedisClusterServer,
                   receiver: ReceiverProcess) -> AsyncIterator[Any]:
    started = Sidecars(tmp_path, redis_cluster, receiver.url("/hook"))

    async def start(storm_above: int) -> list[Sidecar]:
        return await started.start(rules_yaml(storm_above), failover_timeout="30s")

    yield start
    started.stop()


async def test_primary_killed_during_a_429_storm_one_page_one_resolve_every_429_counted_once(
        sidecars: Any, receiver: ReceiverProcess, redis_cluster: RedisClusterServer) -> None:
    per_post, _ = fixture_sum([retimed_body(STORM_CAPTURE, "x")], "rate_limited", "gpt-lab")
    assert per_post >= 2
    group: list[Sidecar] = await sidecars(storm_above=int(2 * per_post))
    await group[0].post(retimed_body(STORM_CAPTURE, "storm-0"))
    client = redis_cluster.client()

    def window_keys() -> list[str]:
        return [k for k in client.scan_iter(match="gw:test:win:*") if not k.endswith((":l", ":k"))]

    await until(lambda: bool(window_keys()), limit=30, what="the storm's window buckets in redis")
    victim = redis_cluster.primary_of(window_keys()[0])
    victim.kill()
    killed = time.monotonic()
    # the storm goes on on the two other sidecars while the replica takes over
    await group[1].post(retimed_body(STORM_CAPTURE, "storm-1"))
    await group[2].post(retimed_body(STORM_CAPTURE, "storm-2"))

    async def storm(status: str) -> bool:
        return any(p["status"] == status for p in notifications(await receiver.accepted(), "RateLimitStorm"))

    await until(lambda: storm("firing"), limit=60, what="the storm page after the failover")
    assert redis_cluster.primary_of(window_keys()[0]).port != victim.port  # a replica serves the slot now
    await until(lambda: storm("resolved"), limit=60, what="the resolve")
    await asyncio.sleep(3.0)  # duplicates would show up now
    pages = notifications(await receiver.accepted(), "RateLimitStorm")
    assert [p["status"] for p in pages] == ["firing", "resolved"], pages
    (firing,) = pages[0]["alerts"]
    assert firing["labels"]["model_group"] == "gpt-lab"
    assert firing["value"] == 3 * per_post  # every 429 of the three posts, once
    sent = [await s.metric("gatewatch_notifications_total", outcome="sent") for s in group]
    assert sum(sent) == 2
    dropped = [await s.metric("gatewatch_state_dropped_increments_total") for s in group]
    assert dropped == [0.0, 0.0, 0.0]
    errors = [await s.metric("gatewatch_state_errors_total") for s in group]
    assert sum(errors) >= 1, errors  # the sidecars did meet the dead primary (and rode it out)
    assert time.monotonic() - killed < 120
