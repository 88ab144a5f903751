"""Shared state in Redis: several sidecars act as one (budgets, global windows, silences, de-dup).

Usually the Redis LiteLLM already runs for its router. Everything gatewatch writes is
under `state.key_prefix`:

  {prefix}doc:{key}            JSON documents (silences, notification log, alert state)
  {prefix}docs                 sorted set indexing the documents, so listing a prefix never SCANs
                               the whole keyspace (LiteLLM's cache may hold millions of keys)
  {prefix}ctr:{key}            counter hashes (budget accumulators: field = label set)
  {prefix}claim:{key}          notification claims (value = the owner)
  {prefix}win:{rule}:{bucket}  `scope: global` rule windows (see shared_window.py)
  {prefix}seq:{instance}       the last batch applied from one process (exactly-once batches)

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
from agent.state.increments import APPLY_SCRIPT, Batch, IncrementQueue, KeyOps, added, batch_args
from agent.state.metrics import StateMetrics

log = logging.getLogger(__name__)

BATCH_FIELDS = 5000  # operations per script call: keeps each call well under a millisecond of Redis time
SEQ_TTL = 7 * 86400.0  # how long Redis remembers a process's last batch (longer than any outage we queue through)
MAX_CACHED_COUNTERS = 10000
SPILL_FILE = "redis-pending.json"

__all__ = ["RedisState", "StateUnavailable"]

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
        self.inflight: list[Batch] = []
        self.rejected = 0
        self._cache: dict[str, dict[str, float]] = {}
        # called every flush tick before sending: move local pre-aggregates (budget deltas) into the queue
        self.sources: list[Callable[[float], None]] = []
        self.windows: weakref.WeakSet[Any] = weakref.WeakSet()  # shared rule windows, drained every tick
        self.spill_path = Path(state_dir) / SPILL_FILE if state_dir is not None else None
        self._secrets = [s for s in (str(config.password or ""), str(config.url or "")) if s]
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._apply_sha = hashlib.sha1(APPLY_SCRIPT.encode()).hexdigest()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._up = False
        self._last_ok = 0.0  # monotonic time of the last round trip that worked
        self._down_since = clock()
        self._last_error = "not connected yet"
        self.metrics = StateMetrics(registry)
        self.metrics.up = lambda: 1.0 if self._up else 0.0
        self.metrics.queued = lambda: float(self.queued())
        self.metrics.dropped = lambda: {"full": self.queue.dropped_full, "expired": self.queue.dropped_expired,
                                        "invalid": self.queue.dropped_invalid, "rejected": self.rejected}
        self._redis = _import_redis()

    # -- keys ---------------------------------------------------------------------------
    def key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    @property
    def up(self) -> bool:
        return self._up

    def queued(self) -> int:
        return len(self.queue) + sum(len(b) for b in self.inflight)

    # -- lifecycle ------------------------------------------------------------------------
    def _make_client(self) -> Any:
        cfg = self.config
        aioredis, retry_cls, no_backoff = self._redis
        kwargs: dict[str, Any] = {
            "socket_timeout": float(cfg.timeout),
            "socket_connect_timeout": float(cfg.connect_timeout),
            "decode_responses": True,
            "retry": retry_cls(no_backoff(), 0),  # we retry ourselves: a blind retry of HINCRBYFLOAT double counts
            "client_name": f"gatewatch-{self.instance}",
        }
        if cfg.password:
            kwargs["password"] = str(cfg.password)
        if cfg.username:
            kwargs["username"] = cfg.username
        if str(cfg.url).startswith("rediss://"):
            if cfg.tls_ca_file:
                kwargs["ssl_ca_certs"] = cfg.tls_ca_file
            if not cfg.tls_verify:
                kwargs["ssl_cert_reqs"] = "none"
                kwargs["ssl_check_hostname"] = False
        return aioredis.Redis.from_url(str(cfg.url), **kwargs)

    async def start(self) -> None:
        if self._client is not None:
            return
        self._stopping = False
        self._client = self._make_client()
        self._scripts = {"claim": self._client.register_script(CLAIM_SCRIPT),
                         "release": self._client.register_script(RELEASE_SCRIPT)}
        self._load_spill()
        await self._probe()
        if self._up:
            log.info("state: redis %s (prefix %s)", self.display, self.prefix)
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
        if self._client is None:
            return
        self._drain(self.clock())
        if self.queued():
            if not self._up:
                await self._probe()
            if self._up:
                with contextlib.suppress(StateUnavailable, Exception):
                    await self.flush()
        self._spill()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):  # never let a stuck connection hold up shutdown
                await self._client.aclose()
        self._client = None

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
            async with asyncio.timeout(float(self.config.timeout) + float(self.config.connect_timeout)):
                await self._client.ping()
                if not self._up:  # (re)connected: the server may have restarted without our script
                    await self._client.script_load(APPLY_SCRIPT)
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
        """Connection refused/cut, timeouts, LOADING after a restart: Redis is away, not refusing us."""
        from redis.exceptions import BusyLoadingError
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        return isinstance(exc, (RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError, TimeoutError))

    async def _call(self, op: str, fn: Callable[[Any], Any]) -> Any:
        """One foreground operation: fail fast when down, count failures, mark down on connection errors."""
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
                results = await self._execute(batches, keys)
                if any(_is_noscript(r) for r in results[:len(batches)]):
                    # Redis restarted (or SCRIPT FLUSH): load and redo; applied batches are skipped by seq
                    await self._client.script_load(APPLY_SCRIPT)
                    results = await self._execute(batches, keys)
        except Exception as exc:
            for batch in batches:
                batch.attempts += 1
            self.metrics.errors.labels(op).inc()
            if self._is_down_error(exc):
                self._mark_down(exc)
                raise StateUnavailable(f"redis {self.display}: {self._last_error}") from None
            raise
        self._mark_up()
        self.metrics.flush_seconds.observe(time.perf_counter() - started)
        for batch, result in zip(batches, results, strict=False):
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
        reads: list[dict[str, str]] = []
        for result in results[len(batches):]:
            if isinstance(result, Exception):
                self.metrics.errors.labels(op).inc()
                raise result
            reads.append(result or {})
        return reads

    async def _execute(self, batches: list[Batch], keys: list[str]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for batch in batches:
                data_keys, argv = batch_args(batch, int(SEQ_TTL * 1000))
                pipe.evalsha(self._apply_sha, 1 + len(data_keys), self.key("seq", batch.instance), *data_keys, *argv)
            for key in keys:
                pipe.hgetall(key)
            return await pipe.execute(raise_on_error=False)

    def _fold(self, batch: Batch) -> None:
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
        """Take `key` for `owner` (or extend it if already its own) for `ttl` seconds, atomically."""
        result = await self._call("claim", lambda r: self._scripts["claim"](keys=[self.key("claim", key)],
                                                                            args=[owner, max(1, int(ttl * 1000))]))
        return bool(result)

    async def release(self, key: str, owner: str) -> None:
        await self._call("claim", lambda r: self._scripts["release"](keys=[self.key("claim", key)], args=[owner]))

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
        if not self.inflight or self.spill_path is None:
            if self.inflight:
                log.error("state: %d increments not sent to redis at shutdown (no state_dir to keep them)",
                          self.queued())
            return
        doc = {"batches": [{"instance": b.instance, "seq": b.seq,
                            "keys": {k: {"fields": ops.fields, "ttl": ops.ttl, "deadline": ops.deadline}
                                     for k, ops in b.keys.items()}} for b in self.inflight]}
        try:
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.spill_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.spill_path)
            log.warning("state: redis unreachable at shutdown; %d increments kept in %s for the next start",
                        self.queued(), self.spill_path)
        except OSError as exc:
            log.error("state: could not keep %d unsent increments: %s", self.queued(), exc)

    def _load_spill(self) -> None:
        path = self.spill_path
        if path is None or not path.exists():
            return
        try:
            doc = json.loads(path.read_text())
            batches = []
            for item in doc.get("batches", []):
                keys = {}
                for key, ops in item["keys"].items():
                    fields = {name: [op, tuple(value) if isinstance(value, list) else float(value)]
                              for name, (op, value) in ops["fields"].items()}
                    keys[key] = KeyOps(fields, ops.get("ttl"), ops.get("deadline"))
                batches.append(Batch(str(item["instance"]), int(item["seq"]), keys))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("state: unreadable %s (%s); its increments are lost", path, exc)
            batches = []
        self.inflight = batches + self.inflight
        with contextlib.suppress(OSError):
            path.unlink()
        if batches:
            log.info("state: %d increments from the last run queued for redis", self.queued())


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
