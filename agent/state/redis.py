"""Shared state in Redis: several sidecars act as one (budgets, global windows, silences, de-dup).

Usually the Redis LiteLLM already runs for its router; a single node or Redis Cluster
(ElastiCache Serverless), see connect.py. Everything gatewatch writes is under
`state.key_prefix`, with hash tags so that one script's keys share a cluster slot (slots.py):

  {prefix}doc:{doc}:<key>        JSON documents (silences, notification log, alert state)
  {prefix}docs:{doc}             sorted set indexing the documents, so listing a prefix never SCANs
                                 the whole keyspace (LiteLLM's cache may hold millions of keys)
  {prefix}ctr:{<key>}            counter hashes (budget accumulators: field = label set)
  {prefix}claim:<key>            notification claims (value = the owner)
  {prefix}win:{<rule>}:<bucket>  `scope: global` rule windows (see shared_window.py)
  {prefix}seq:{<tag>}:<instance> the last batch of one process applied to that tag's keys

The hot path never waits for Redis. Counter increments and window pre-aggregates go into a
bounded local queue (increments.py) that a background task sends every `flush_interval`
in one pipelined round trip; a read (budget totals, a global window at evaluation) sends
the queue and reads in the same round trip, so a sidecar always sees its own writes.

Redis down or slow: the first failed round trip (after `timeout`) marks the backend down;
from then on every call fails at once with `StateUnavailable` (callers fall back: local
windows, cached budget totals, "send anyway" for de-dup) while the background task probes
every `flush_interval`, and flushes the queue as soon as Redis answers again. A batch
whose answer was lost is retried with its sequence number, which the Lua script uses to
apply it exactly once. Increments still queued at shutdown are written to
`state_dir/redis-pending.json` and sent by the next start.

Failover: replication to a replica is asynchronous, so a primary that dies right after
answering may take the last writes with it. When the primary of a slot has a replica, the
round trip ends with `WAIT 1` on that primary; a batch counts as sent only once a replica
has it, else it stays in flight and is sent again (skipped where it landed, thanks to the
sequence numbers, applied again on a promoted replica that never got it).

The backend is put together from three parts: the connection and its up/down state
(redis_link.py), the increment round trips and counters (redis_batches.py), the documents
and claims (redis_docs.py); this module holds the lifecycle, the flush loop, health and
the spill file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from agent.state.base import StateUnavailable
from agent.state.config import StateConfig, display_url
from agent.state.increments import APPLY_SCRIPT, IncrementBatch, IncrementQueue
from agent.state.metrics import StateMetrics
from agent.state.redis_batches import BATCH_FIELDS, RedisBatches
from agent.state.redis_docs import RedisDocs
from agent.state.redis_link import import_redis
from agent.state.spill import read_spill, write_spill

log = logging.getLogger(__name__)

SPILL_FILE = "redis-pending.json"

__all__ = ["RedisState"]


class RedisState(RedisBatches, RedisDocs):
    name = "redis"
    shared = True  # every task of the service sees the same state (the rule engine persists only global alerts)

    def __init__(self, config: StateConfig, registry: CollectorRegistry | None = None,
                 state_dir: str | os.PathLike[str] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.prefix = config.key_prefix
        self.clock = clock
        self.display = display_url(str(config.url or ""))
        self.instance = uuid.uuid4().hex[:16]
        self._seq = itertools.count(1)
        self.queue = IncrementQueue(config.max_queued_increments)
        self.inflight: list[IncrementBatch] = []
        self.rejected = 0
        self._cache: dict[str, dict[str, float]] = {}
        # called every flush tick before sending: move local pre-aggregates (budget deltas) into the queue
        self.sources: list[Callable[[float], None]] = []
        self.windows: weakref.WeakSet[Any] = weakref.WeakSet()  # shared rule windows, drained every tick
        self.spill_path = Path(state_dir) / SPILL_FILE if state_dir is not None else None
        self._secrets = [s for s in (str(config.password or ""), str(config.url or "")) if s]
        self._client: Any = None
        self.cluster: bool | None = None  # known once connected (state.cluster: auto asks the server)
        self._replicas = 0  # single node: its connected replicas (cluster: per slot, from the topology)
        self._wait = True  # WAIT allowed (a managed service may refuse it; then writes are not confirmed)
        self._apply_sha = hashlib.sha1(APPLY_SCRIPT.encode()).hexdigest()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._up = False
        self._last_ok = 0.0  # monotonic time of the last round trip that worked
        self._down_since = clock()
        self._claims_gave_up: float | None = None  # the outage (its _down_since) a claim already waited out
        self._last_error = "not connected yet"
        self.metrics = StateMetrics(registry)
        self.metrics.up = lambda: 1.0 if self._up else 0.0
        self.metrics.queued = lambda: float(self.queued())
        self.metrics.dropped = lambda: {"full": self.queue.dropped_full, "expired": self.queue.dropped_expired,
                                        "invalid": self.queue.dropped_invalid, "rejected": self.rejected}
        self._redis = import_redis()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        self._load_spill()
        await self._probe()
        if self._up:
            log.info("state: redis %s%s (prefix %s)", self.display, " cluster" if self.cluster else "", self.prefix)
        else:
            log.warning("state: redis %s unreachable at start (%s); running degraded until it answers",
                        self.display, self._last_error)
        self._task = asyncio.create_task(self._run(), name="gatewatch-state-flush")

    async def stop(self, deadline: float) -> None:
        """Send what is queued in the time left before `deadline` (time.monotonic()); what Redis has
        not taken by then goes to the spill file (local, so it is never cut off) for the next start."""
        self._stopping = True
        if self._task is not None:
            # A cancel can be swallowed when it lands as an asyncio.timeout() expires (the
            # CancelledError becomes a TimeoutError that a probe treats as "Redis down"), so
            # keep cancelling until the task is done; the loop also checks _stopping.
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=0.5)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                self._task.result()
            self._task = None
        self._drain(self.clock())
        if self.queued() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - time.monotonic()):
                    if not self._up:
                        await self._probe()
                    if self._up:
                        with contextlib.suppress(StateUnavailable, Exception):
                            await self.send_queue()
        self._spill()
        if self._client is not None:
            with contextlib.suppress(Exception):
                # never let a stuck connection hold up shutdown
                async with asyncio.timeout(min(2.0, max(0.0, deadline - time.monotonic()))):
                    await self._client.aclose()
        self._client = None
        self._up = False

    # -- background flusher ---------------------------------------------------------------
    def _drain(self, now: float) -> None:
        for source in list(self.sources):
            try:
                source(now)
            except Exception:
                log.exception("state: a pre-aggregate source failed to drain")
        for window in list(self.windows):
            try:
                window.drain(now)
            except Exception:
                log.exception("state: a shared rule window failed to drain")

    async def _run(self) -> None:
        interval = float(self.config.flush_interval)
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                self._drain(self.clock())
                if not self._up:
                    await self._probe()
                    if not self._up:
                        self.queue.prune(self.clock())
                        continue
                if self.queue.size or self.inflight:
                    await self.send_queue()
                elif time.monotonic() - self._last_ok >= 5 * interval:
                    await self._probe()  # idle: still notice (metric, /readyz) when Redis goes away
            except StateUnavailable:
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("state: flush loop failed; continuing")

    # -- health -------------------------------------------------------------------------------
    def healthy(self) -> tuple[bool, str]:
        """Always ready: without Redis the sidecar still exports metrics and evaluates local rules.

        Failing readiness here would let one shared dependency take every task of the
        service out of rotation (or restart them all) at once; the detail says "degraded".
        """
        queued = self.queued()
        if self._up:
            return True, f"redis {self.display} up (prefix {self.prefix}); {queued} increments queued"
        down_for = self.clock() - self._down_since
        return True, (f"degraded: redis {self.display} unreachable for {down_for:.0f}s ({self._last_error}); "
                      f"{queued} increments queued (max {self.config.max_queued_increments}); "
                      "local rules and metrics go on")

    # -- spill file (increments still queued at shutdown) ---------------------------------------
    def _spill(self) -> None:
        if self.queue.size:
            self.inflight.extend(self.queue.take(self.instance, self._seq, BATCH_FIELDS))
        if not self.inflight:
            return
        if self.spill_path is None:
            log.error("state: %d increments not sent to redis at shutdown (no state_dir to keep them)", self.queued())
            return
        try:
            write_spill(self.spill_path, self.inflight)
            log.warning("state: redis unreachable at shutdown; %d increments kept in %s for the next start",
                        self.queued(), self.spill_path)
        except OSError as exc:
            log.error("state: could not keep %d unsent increments: %s", self.queued(), exc)

    def _load_spill(self) -> None:
        if self.spill_path is None:
            return
        batches = read_spill(self.spill_path)
        self.inflight = batches + self.inflight
        if batches:
            log.info("state: %d increments from the last run queued for redis", self.queued())
