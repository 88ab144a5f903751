"""The connection to Redis and its up/down state, shared by the backend's operations (redis.py).

One place decides whether Redis is "away" (connection refused or cut, timeouts, a restart
loading, a cluster failing over) or refusing us: the first marks the backend down, so every
later call fails at once with `StateUnavailable` until a probe gets an answer again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from agent.configtypes import ConfigError
from agent.state.base import StateUnavailable
from agent.state.config import StateConfig
from agent.state.connect import client_kwargs, detect_cluster, make_client
from agent.state.increments import APPLY_SCRIPT, IncrementBatch, IncrementQueue
from agent.state.metrics import StateMetrics
from agent.state.slots import DOC_TAG, tagged

log = logging.getLogger("agent.state.redis")

__all__ = ["RedisLink", "import_redis"]


class RedisLink:
    """The client, the key layout and the up/down bookkeeping; RedisState (redis.py) sets the fields."""

    config: StateConfig
    prefix: str
    clock: Callable[[], float]
    display: str
    instance: str
    queue: IncrementQueue
    inflight: list[IncrementBatch]
    metrics: StateMetrics
    cluster: bool | None
    _client: Any
    _secrets: list[str]
    _replicas: int
    _wait: bool
    _up: bool
    _last_ok: float
    _down_since: float
    _last_error: str
    _stopping: bool

    # -- keys ---------------------------------------------------------------------------
    def key(self, kind: str, name: str) -> str:
        """Where `name` of `kind` lives; the same layout on one node and on a cluster (slots.py)."""
        if kind == "doc":
            return f"{self.prefix}doc:{{{DOC_TAG}}}:{name}"
        if kind == "docs":
            return f"{self.prefix}docs:{{{DOC_TAG}}}"
        if kind in ("ctr", "win"):
            return tagged(self.prefix, kind, name)
        return f"{self.prefix}{kind}:{name}"

    @property
    def up(self) -> bool:
        return self._up

    def queued(self) -> int:
        return len(self.queue) + sum(len(b) for b in self.inflight)

    # -- connection ---------------------------------------------------------------------
    async def _connect(self) -> None:
        """Find out single node or cluster (state.cluster: auto), then build the client."""
        kwargs = client_kwargs(self.config, f"gatewatch-{self.instance}")
        cluster = await detect_cluster(self.config, kwargs)
        client = make_client(self.config, kwargs, cluster)
        if cluster:
            try:
                await client.initialize()  # the topology: every primary, its slots and replicas
            except BaseException:
                with contextlib.suppress(Exception):
                    await client.aclose()
                raise
        self._client, self.cluster = client, cluster

    async def _probe(self) -> None:
        try:
            async with asyncio.timeout(float(self.config.timeout) + 2 * float(self.config.connect_timeout)):
                if self._client is None:
                    await self._connect()
                if self.cluster:
                    from redis.asyncio.cluster import RedisCluster

                    await self._client.ping(target_nodes=RedisCluster.PRIMARIES)
                else:
                    await self._client.ping()
                if not self._up:  # (re)connected: the server may have restarted without our script
                    await self._client.script_load(APPLY_SCRIPT)
                    if not self.cluster:
                        info = await self._client.info("replication")
                        self._replicas = int(info.get("connected_slaves", 0) or 0)
        except Exception as exc:
            self.metrics.errors.labels("connect").inc()
            self._mark_down(exc)
            return
        self._mark_up()

    def _mark_down(self, exc: BaseException) -> None:
        self._last_error = self._safe(f"{type(exc).__name__}: {exc}".strip().rstrip(":"))
        if self._up:
            self._up = False
            self._down_since = self.clock()
            log.warning("state: redis %s down (%s); local rules and metrics go on, %d increments queued "
                        "(max %d)", self.display, self._last_error, self.queued(), self.config.max_queued_increments)

    def _mark_up(self) -> None:
        self._last_ok = time.monotonic()
        if not self._up:
            self._up = True
            if self.queued():
                log.info("state: redis %s answers again after %.0fs; sending %d queued increments", self.display,
                         self.clock() - self._down_since, self.queued())

    def _safe(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:300]

    # -- round trips ----------------------------------------------------------------------
    def _check(self) -> None:
        if not self._up or self._client is None:
            raise StateUnavailable(f"redis {self.display} unavailable: {self._last_error}")

    def _is_down_error(self, exc: BaseException) -> bool:
        """Connection refused/cut, timeouts, LOADING after a restart, a cluster failing over: Redis is away
        (or moving), not refusing us."""
        from redis import exceptions as e

        return isinstance(exc, (e.ConnectionError, e.TimeoutError, e.BusyLoadingError, e.ClusterError,
                                e.ClusterDownError, e.TryAgainError, e.AskError, e.ReadOnlyError,
                                e.RedisClusterException, OSError, TimeoutError))

    async def _call(self, op: str, fn: Callable[[Any], Any], fail_fast: bool = True) -> Any:
        """One foreground operation: fail fast when down, count failures, mark down on connection errors."""
        if fail_fast or self._client is None:
            self._check()
        try:
            async with asyncio.timeout(float(self.config.timeout) + float(self.config.connect_timeout)):
                result = await fn(self._client)
            self._last_ok = time.monotonic()
            return result
        except Exception as exc:
            self.metrics.errors.labels(op).inc()
            if self._is_down_error(exc):
                self._mark_down(exc)
                raise StateUnavailable(f"redis {self.display}: {self._last_error}") from None
            raise


def import_redis() -> tuple[Any, Any, Any]:
    try:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError:
        raise ConfigError("state.url", "the Redis backend needs the redis package: pip install 'gatewatch[redis]'"
                          ) from None
    return aioredis, Retry, NoBackoff
