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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from agent.configtypes import ConfigError
from agent.state.base import StateUnavailable
from agent.state.config import StateConfig, display_url
from agent.state.connect import client_kwargs, detect_cluster, make_client, replicas_of
from agent.state.increments import APPLY_SCRIPT, IncrementBatch, IncrementQueue, added, batch_args
from agent.state.metrics import StateMetrics
from agent.state.slots import DOC_TAG, group_by_tag, seq_key, tagged
from agent.state.spill import read_spill, write_spill

log = logging.getLogger(__name__)

BATCH_FIELDS = 5000  # operations per script call: keeps each call well under a millisecond of Redis time
SEQ_TTL = 7 * 86400.0  # how long Redis remembers a process's last batch (longer than any outage we queue through)
MAX_CACHED_COUNTERS = 10000
SPILL_FILE = "redis-pending.json"
MAX_UNCONFIRMED = 5  # round trips a batch waits for a replica's WAIT before it counts as sent anyway

__all__ = ["RedisState"]

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


class RedisState:
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
        self._redis = _import_redis()

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

    # -- lifecycle ------------------------------------------------------------------------
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

    async def stop(self) -> None:
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
        if self.queued():
            if not self._up:
                await self._probe()
            if self._up:
                with contextlib.suppress(StateUnavailable, Exception):
                    await self.flush()
        self._spill()
        if self._client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):  # never let a stuck connection hold up shutdown
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
                    await self.flush()
                elif time.monotonic() - self._last_ok >= 5 * interval:
                    await self._probe()  # idle: still notice (metric, /readyz) when Redis goes away
            except StateUnavailable:
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("state: flush loop failed; continuing")

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

    async def flush(self) -> None:
        """Send the queue (and batches not yet acknowledged) in one pipelined round trip."""
        self._check()
        async with self._lock:
            await self._round_trip([], "flush")

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


RETRY = object()  # a batch applied where its answer came from, but not yet confirmed on a replica


def _is_noscript(result: Any) -> bool:
    from redis.exceptions import NoScriptError

    return isinstance(result, NoScriptError) or (isinstance(result, Exception) and "NOSCRIPT" in str(result))


def _import_redis() -> tuple[Any, Any, Any]:
    try:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError:
        raise ConfigError("state.url", "the Redis backend needs the redis package: pip install 'gatewatch[redis]'"
                          ) from None
    return aioredis, Retry, NoBackoff
