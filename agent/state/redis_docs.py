"""JSON documents and exactly-one-sender claims in Redis (silences, alert state, notification de-dup).

Foreground operations: each one round trip, failing at once with `StateUnavailable` while
Redis is down (callers fall back), except a claim on a cluster, which waits out a failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from agent.state.base import StateUnavailable
from agent.state.connect import replicas_of
from agent.state.redis_link import RedisLink

__all__ = ["RedisDocs"]

CLAIM_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisDocs(RedisLink):
    """Documents (indexed by a sorted set, so listing never SCANs) and claims (confirmed on a replica)."""

    _claims_gave_up: float | None

    # -- JSON documents ---------------------------------------------------------------------
    async def get_json(self, key: str) -> Any | None:
        raw = await self._call("json", lambda r: r.get(self.key("doc", key)))
        return json.loads(raw) if raw is not None else None

    async def put_json(self, key: str, value: Any, ttl: float | None = None) -> None:
        text = json.dumps(value, separators=(",", ":"))

        async def op(r: Any) -> None:
            async with r.pipeline(transaction=True) as pipe:
                if ttl:
                    pipe.set(self.key("doc", key), text, px=max(1, int(ttl * 1000)))
                else:
                    pipe.set(self.key("doc", key), text)
                pipe.zadd(self.key("docs", "index"), {key: 0})
                await pipe.execute()

        await self._call("json", op)

    async def delete(self, key: str) -> None:
        async def op(r: Any) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.delete(self.key("doc", key))
                pipe.zrem(self.key("docs", "index"), key)
                await pipe.execute()

        await self._call("json", op)

    async def list_json(self, prefix: str) -> dict[str, Any]:
        index = self.key("docs", "index")

        async def op(r: Any) -> dict[str, Any]:
            names = await r.zrangebylex(index, b"[" + prefix.encode(), b"[" + prefix.encode() + b"\xff")
            if not names:
                return {}
            values = await r.mget([self.key("doc", n) for n in names])
            out: dict[str, Any] = {}
            gone = []
            for name, raw in zip(names, values, strict=True):
                if raw is None:
                    gone.append(name)  # expired: drop it from the index
                    continue
                with contextlib.suppress(ValueError):
                    out[name] = json.loads(raw)
            if gone:
                await r.zrem(index, *gone)
            return out

        return await self._call("json", op)

    # -- claims -------------------------------------------------------------------------------
    async def claim(self, key: str, owner: str, ttl: float) -> bool:
        """Take `key` for `owner` (or extend it if already its own) for `ttl` seconds, atomically.

        On a cluster, a claim whose shard is failing over waits for the promoted replica (up to
        `state.failover_timeout`) instead of failing at once: failing would make every task send.
        The claim is confirmed on a replica (WAIT) where the shard has one, so a failover right
        after it cannot hand the same page to a second task.
        """
        rkey = self.key("claim", key)
        args = [owner, max(1, int(ttl * 1000))]
        if not self.cluster or self.config.failover_timeout <= 0:
            return bool(await self._call("claim", lambda r: self._confirmed_eval(r, CLAIM_SCRIPT, rkey, args)))
        # one wait per outage: once a claim waited it out, the next ones fail at once until Redis answers again
        # (a whole-cluster outage must not hold every due notification up for failover_timeout each)
        fail_fast = not self._up and self._claims_gave_up == self._down_since
        deadline = time.monotonic() + float(self.config.failover_timeout)
        while True:
            try:
                return bool(await self._call("claim", lambda r: self._confirmed_eval(r, CLAIM_SCRIPT, rkey, args),
                                             fail_fast=fail_fast))
            except StateUnavailable:
                if fail_fast or self._stopping or time.monotonic() >= deadline:
                    if not self._up:
                        self._claims_gave_up = self._down_since
                    raise
                await asyncio.sleep(min(0.5, max(0.05, deadline - time.monotonic())))

    async def release(self, key: str, owner: str) -> None:
        rkey = self.key("claim", key)
        await self._call("claim", lambda r: r.eval(RELEASE_SCRIPT, 1, rkey, owner))

    async def _confirmed_eval(self, client: Any, script: str, key: str, args: list[Any]) -> Any:
        """EVAL, then WAIT for a replica on the same connection when the key's primary has one."""
        node, replicas = replicas_of(client, key) if self.cluster else (None, self._replicas)
        async with client.pipeline(transaction=False) as pipe:
            pipe.eval(script, 1, key, *args)
            if replicas and self._wait:
                wait_ms = max(1, int(float(self.config.timeout) * 500))
                if node is not None:
                    pipe.execute_command("WAIT", 1, wait_ms, target_nodes=node)
                else:
                    pipe.execute_command("WAIT", 1, wait_ms)
            results = await pipe.execute(raise_on_error=False)
        if isinstance(results[0], Exception):
            raise results[0]
        if len(results) > 1 and isinstance(results[1], Exception) and not self._is_down_error(results[1]):
            self._wait = False
        return results[0]
