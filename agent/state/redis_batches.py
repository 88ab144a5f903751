"""The increment round trip to Redis: queued counter and window increments, sent exactly once.

A background task (redis.py) or a read sends the queue in one pipelined round trip: every
batch as one Lua script call per hash tag (applied once thanks to its sequence number),
the reads, then `WAIT 1` where a primary has a replica, so that a batch counts as sent
only once a replica has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any

from agent.state.base import StateUnavailable
from agent.state.connect import replicas_of
from agent.state.increments import APPLY_SCRIPT, IncrementBatch, added, batch_args
from agent.state.redis_link import RedisLink
from agent.state.slots import group_by_tag, seq_key

log = logging.getLogger("agent.state.redis")

BATCH_FIELDS = 5000  # operations per script call: keeps each call well under a millisecond of Redis time
SEQ_TTL = 7 * 86400.0  # how long Redis remembers a process's last batch (longer than any outage we queue through)
MAX_CACHED_COUNTERS = 10000
MAX_UNCONFIRMED = 5  # round trips a batch waits for a replica's WAIT before it counts as sent anyway

__all__ = ["RedisBatches"]


class RedisBatches(RedisLink):
    """Counters: queued locally (never waiting for Redis on the hot path), sent in batches, read back."""

    rejected: int
    _seq: itertools.count[int]
    _cache: dict[str, dict[str, float]]
    _apply_sha: str
    _lock: asyncio.Lock

    async def send_queue(self) -> None:
        """Send the queue (and batches not yet acknowledged) in one pipelined round trip; raises
        `StateUnavailable` while Redis is down."""
        self._check()
        async with self._lock:
            await self._round_trip([], "flush")

    async def flush(self, deadline: float) -> bool:
        """Flush on demand: send what is queued by `deadline` (time.monotonic()); True when Redis
        has taken everything, False when it is down or the deadline came first (the queue keeps it)."""
        if time.monotonic() >= deadline:
            return not self.queued()
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                await self.send_queue()
        except (StateUnavailable, TimeoutError):
            return False
        return not self.queued()

    async def flush_and_read(self, keys: list[str]) -> list[dict[str, str]]:
        """Flush, then HGETALL each key, in the same round trip (reads see this sidecar's writes)."""
        self._check()
        async with self._lock:
            return await self._round_trip(keys, "read")

    async def _round_trip(self, keys: list[str], op: str) -> list[dict[str, str]]:
        self._check()
        self.queue.prune(self.clock())
        if self.queue.size and sum(len(b) for b in self.inflight) < self.queue.limit:
            # unacknowledged batches are bounded like the queue: while they wait, new increments keep merging
            self.inflight.extend(self.queue.take(self.instance, self._seq, BATCH_FIELDS))
        batches = list(self.inflight)
        if not batches and not keys:
            return []
        started = time.perf_counter()
        try:
            async with asyncio.timeout(float(self.config.timeout) * 2 + float(self.config.connect_timeout)):
                outcomes, reads_raw = await self._execute(batches, keys)
                if any(_is_noscript(r) for r in outcomes):
                    # Redis restarted, a replica took over (SCRIPT FLUSH, a new primary): load and redo;
                    # applied batches are skipped by seq
                    await self._client.script_load(APPLY_SCRIPT)
                    outcomes, reads_raw = await self._execute(batches, keys)
        except Exception as exc:
            for batch in batches:
                batch.attempts += 1
            self.metrics.errors.labels(op).inc()
            if self._is_down_error(exc):
                self._mark_down(exc)
                raise StateUnavailable(f"redis {self.display}: {self._last_error}") from None
            raise
        down = next((r for r in [*outcomes, *reads_raw] if isinstance(r, Exception) and self._is_down_error(r)),
                    None)
        if down is None:
            self._mark_up()
        self.metrics.flush_seconds.observe(time.perf_counter() - started)
        for batch, result in zip(batches, outcomes, strict=True):
            if result is RETRY or (isinstance(result, Exception) and self._is_down_error(result)):
                batch.attempts += 1  # a shard away or failing over: sent again, applied once
                continue
            self.inflight.remove(batch)
            if isinstance(result, Exception):
                # refused by Redis (not a connection problem): retrying cannot help, and a later batch of this
                # process was applied already, so its sequence number is spent
                self.rejected += len(batch)
                self.metrics.errors.labels(op).inc()
                log.error("state: redis refused a batch of %d increments: %s", len(batch), self._safe(str(result)))
                continue
            self.metrics.flushed.inc(len(batch))
            self._fold(batch)
        if down is not None:
            self.metrics.errors.labels(op).inc()
            self._mark_down(down)
            raise StateUnavailable(f"redis {self.display}: {self._last_error}")
        reads: list[dict[str, str]] = []
        for result in reads_raw:
            if isinstance(result, Exception):
                self.metrics.errors.labels(op).inc()
                raise result
            reads.append(result or {})
        return reads

    async def _execute(self, batches: list[IncrementBatch], keys: list[str]) -> tuple[list[Any], list[Any]]:
        """One pipeline: every batch as one script call per hash tag, the reads, then WAIT where a replica is.

        Returns one outcome per batch (the script's answer, its first error, or RETRY when a
        replica did not confirm it) and the reads' answers.
        """
        cluster = bool(self.cluster)
        wait_ms = max(1, int(float(self.config.timeout) * 500))
        calls: list[list[int]] = []
        waits: dict[str, tuple[Any, list[int]]] = {}  # primary -> (node, script calls it must confirm)
        async with self._client.pipeline(transaction=False) as pipe:
            n = 0
            for batch in batches:
                mine = []
                for tag, data_keys in group_by_tag(batch.keys):
                    args_keys, argv = batch_args(batch, int(SEQ_TTL * 1000), data_keys)
                    skey = seq_key(self.prefix, tag, batch.instance)
                    pipe.evalsha(self._apply_sha, 1 + len(args_keys), skey, *args_keys, *argv)
                    mine.append(n)
                    if self._wait:
                        node, replicas = replicas_of(self._client, skey) if cluster else (None, self._replicas)
                        if replicas:
                            waits.setdefault(node.name if node is not None else "", (node, []))[1].append(n)
                    n += 1
                calls.append(mine)
            for key in keys:
                pipe.hgetall(key)
            for node, _ in waits.values():
                if node is not None:
                    pipe.execute_command("WAIT", 1, wait_ms, target_nodes=node)
                else:
                    pipe.execute_command("WAIT", 1, wait_ms)
            results = await pipe.execute(raise_on_error=False)
        unconfirmed: set[int] = set()
        for (_node, covered), acks in zip(waits.values(), results[n + len(keys):], strict=True):
            if isinstance(acks, Exception) and not self._is_down_error(acks):
                self._wait = False  # e.g. a managed service that refuses WAIT: its durability is its own
                log.warning("state: redis refuses WAIT (%s); writes are not confirmed on a replica", acks)
            elif not isinstance(acks, int) or acks < 1:
                unconfirmed.update(covered)
        outcomes: list[Any] = []
        for batch, mine in zip(batches, calls, strict=True):
            answers = [results[i] for i in mine]
            error = next((a for a in answers if isinstance(a, Exception)), None)
            if error is not None:
                outcomes.append(error)
            elif unconfirmed.intersection(mine) and batch.unconfirmed < MAX_UNCONFIRMED:
                batch.unconfirmed += 1
                outcomes.append(RETRY)
            else:
                if unconfirmed.intersection(mine):
                    log.warning("state: no replica confirmed a batch after %d round trips; counting it as sent",
                                batch.unconfirmed)
                outcomes.append(answers[0] if answers else 1)
        return outcomes, results[n:n + len(keys)]

    def _fold(self, batch: IncrementBatch) -> None:
        """Acknowledged increments of cached counter keys: the cache stays the best known total."""
        for key, ops in batch.keys.items():
            cached = self._cache.get(key)
            if cached is None:
                continue
            for name, (op, value) in ops.fields.items():
                if op == "+":
                    cached[name] = cached.get(name, 0.0) + value

    # -- counters -----------------------------------------------------------------------------
    async def incr_many(self, key: str, amounts: dict[str, float], ttl: float | None = None) -> None:
        """Queued, not sent: the flusher (or the next read) takes it to Redis. Never raises for Redis."""
        self.enqueue(key, amounts, ttl)

    def enqueue(self, key: str, amounts: dict[str, float], ttl: float | None = None) -> None:
        """`incr_many` without the coroutine, for pre-aggregate sources on the flush tick."""
        self.queue.add_many(self.key("ctr", key), amounts, ttl)

    async def get_counters(self, key: str) -> dict[str, float]:
        """Redis's totals plus what this sidecar has not sent yet; when down, the last totals read."""
        rkey = self.key("ctr", key)
        values: dict[str, float] | None = None
        if self._up:
            try:
                (remote,) = await self.flush_and_read([rkey])
                values = {}
                for name, raw in remote.items():
                    with contextlib.suppress(ValueError):
                        values[name] = float(raw)
                if rkey in self._cache or len(self._cache) < MAX_CACHED_COUNTERS:
                    self._cache[rkey] = dict(values)
            except StateUnavailable:
                values = None
            except Exception:
                log.warning("state: reading counters %s failed", key, exc_info=True)
                values = None
        if values is None:
            values = dict(self._cache.get(rkey, {}))
        for source in (added(self.inflight, rkey), self.queue.amounts(rkey)):
            for name, amount in source.items():
                values[name] = values.get(name, 0.0) + amount
        return values


RETRY = object()  # a batch applied where its answer came from, but not yet confirmed on a replica


def _is_noscript(result: Any) -> bool:
    from redis.exceptions import NoScriptError

    return isinstance(result, NoScriptError) or (isinstance(result, Exception) and "NOSCRIPT" in str(result))

