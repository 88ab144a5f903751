"""The window of a `scope: global` rule: every sidecar's observations, added up in Redis.

Each sidecar keeps a full local window (`merged`, a LocalWindow) that the evaluator reads,
plus a buffer of the observations it has not sent yet. Every `state.flush_interval` the
buffer is reduced with numpy to one set of operations per (label set, time bucket) and
queued for the pipelined flush: bucket hashes `{prefix}win:{rule}|{identity}:{bucket}`
with fields `<label set json>\\x1f<stat>` (c count, s sum, x beyond-threshold count,
n min, m max, h<i> histogram bins; expiring with the window). Rules that read the latest
value, absence or streaks also keep `...:l` ("time:value", the later time wins) and
`...:k` (consecutive hits; a miss anywhere resets it).

At evaluation, `refresh(now)` sends what is buffered and reads the window's buckets in the
same round trip, rebuilds `merged` from them (all sidecars' data, including ours), and
replays the observations that arrived during the round trip. If Redis is down the
refresh is skipped: `merged` still holds the last global picture plus everything this
sidecar has seen since, and it ages out bucket by bucket like any window, so a global rule
degrades to "what I last knew + what I see", never to nothing.

Bucket alignment is global (`floor(t / width)`), so every sidecar writes the same bucket
for the same second.
"""

from __future__ import annotations

import json
import logging
import math
from array import array
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.state.base import StateUnavailable
from agent.state.increments import ADD, LATEST, MAX, MIN, SET
from agent.state.windows import Key, LocalWindow, WindowView

if TYPE_CHECKING:
    from agent.rules.model import Rule
    from agent.state.redis import RedisState

log = logging.getLogger(__name__)

SEP = "\x1f"  # JSON escapes control characters, so it never occurs inside the label-set part
BUFFER_LIMIT = 50_000  # observations buffered before an early drain (bounds memory if the flusher stalls)
MAX_FIELD_CACHE = 100_000


class SharedWindow:
    """`Window` protocol (agent/state/windows.py), shared through the Redis state backend."""

    def __init__(self, rule: Rule, state: RedisState, factory: Callable[[], Any]) -> None:
        local = factory()
        if not isinstance(local, LocalWindow):
            raise TypeError("a shared window wraps a LocalWindow")
        self.rule = rule
        self.state = state
        self._factory = factory
        self.merged: LocalWindow = local
        self.over = local.over
        self.nb = local.nb
        self.width = local.width
        self.bounds = local.bounds
        self.clock = local.clock
        self.name = f"{rule.id}|{rule.window_identity()}"
        self._base = state.key("win", self.name)
        self.streak = local._streak is not None
        self.track_last = rule.aggregate in ("absent", "last", "consecutive")
        # how long a series' last time matters (absent alerts until forget_after)
        self.keep = max(rule.forget_after, rule.over) if rule.aggregate == "absent" else rule.over
        self._keys: list[Key] = []
        self._ts = array("d")
        self._vs = array("d")
        self._replay: tuple[list[Key], array, array] | None = None
        self._fields: dict[Key, str] = {}
        self._dropped_before = 0
        self._late_before = 0
        self.refreshes = 0
        self.refresh_failures = 0
        self.refreshed_at: float | None = None
        state.windows.add(self)

    # -- Window protocol ----------------------------------------------------------------
    @property
    def dropped(self) -> int:
        return self._dropped_before + self.merged.dropped

    @property
    def late(self) -> int:
        return self._late_before + self.merged.late

    def __len__(self) -> int:
        return len(self.merged)

    def observe(self, key: Key, t: float, value: float) -> None:
        self.merged.observe(key, t, value)
        if value != value:  # NaN
            return
        self._buffer(key, t, value)

    def observe_outcome(self, key: Key, t: float, hit: bool) -> None:
        self.merged.observe_outcome(key, t, hit)
        self._buffer(key, t, 1.0 if hit else 0.0)

    def _buffer(self, key: Key, t: float, value: float) -> None:
        """Queue one observation for the next flush to Redis (and the replay log, if kept)."""
        self._keys.append(key)
        self._ts.append(t)
        self._vs.append(value)
        if self._replay is not None:
            self._replay[0].append(key)
            self._replay[1].append(t)
            self._replay[2].append(value)
        if len(self._keys) >= BUFFER_LIMIT:
            self.drain(self.clock())

    def view(self, now: float) -> WindowView:
        return self.merged.view(now)

    def forget(self, now: float, horizon: float, keep: set[Hashable]) -> int:
        return self.merged.forget(now, horizon, keep)

    # -- keys ---------------------------------------------------------------------------
    def bucket_key(self, bucket: int) -> str:
        return f"{self._base}:{bucket}"

    def _field(self, key: Key) -> str:
        name = self._fields.get(key)
        if name is None:
            if len(self._fields) >= MAX_FIELD_CACHE:
                self._fields.clear()
            name = self._fields[key] = json.dumps(list(key), separators=(",", ":")) + SEP
        return name

    def read_keys(self, now: float) -> list[str]:
        cur = int(now // self.width)
        keys = [self.bucket_key(b) for b in range(cur - self.nb + 1, cur + 1)]
        if self.track_last:
            keys.append(f"{self._base}:l")
        if self.streak:
            keys.append(f"{self._base}:k")
        return keys

    # -- write path: buffer -> pre-aggregates -> the state's queue ------------------------------
    def drain(self, now: float) -> None:
        """Reduce the buffered observations to per-(label set, bucket) operations and queue them."""
        if not self._keys:
            return
        keys, ts_buf, vs_buf = self._keys, self._ts, self._vs
        self._keys, self._ts, self._vs = [], array("d"), array("d")
        n = len(keys)
        ts = np.minimum(np.frombuffer(ts_buf, dtype=np.float64), now)
        vs = np.frombuffer(vs_buf, dtype=np.float64)
        queue = self.state.queue
        if self.track_last:
            self._queue_latest(keys, ts, vs)
        if self.streak:
            self._queue_streaks(keys, vs)
        width, nb = self.width, self.nb
        first = int(now // width) - nb + 1
        ids: dict[Key, int] = {}
        sid = np.fromiter((ids.setdefault(k, len(ids)) for k in keys), dtype=np.int64, count=n)
        labels = list(ids)
        bucket = (ts // width).astype(np.int64)
        keep = bucket >= first  # older than the ring: late (the local window counted it)
        if not keep.all():
            sid, bucket, vs = sid[keep], bucket[keep], vs[keep]
        if not len(sid):
            return
        group = sid * nb + (bucket - first)
        uniq, inv = np.unique(group, return_inverse=True)
        m = len(uniq)
        stats: list[tuple[str, str, np.ndarray]] = [("c", ADD, np.bincount(inv, minlength=m).astype(np.float64))]
        local = self.merged
        if local.sums:
            stats.append(("s", ADD, np.bincount(inv, weights=vs, minlength=m)))
        if local.split_value is not None:
            beyond = vs < local.split_value if local.split_below else vs > local.split_value
            stats.append(("x", ADD, np.bincount(inv, weights=beyond.astype(np.float64), minlength=m)))
        if local.min is not None:
            low = np.full(m, np.inf)
            high = np.full(m, -np.inf)
            np.minimum.at(low, inv, vs)
            np.maximum.at(high, inv, vs)
            stats.append(("n", MIN, low))
            stats.append(("m", MAX, high))
        hist = None
        if local.bounds is not None:
            nbins = len(local.bounds) + 1
            bins = np.searchsorted(local.bounds, vs, side="left")
            hist = np.bincount(inv * nbins + bins, minlength=m * nbins).reshape(m, nbins)
        ttl = self.over + 2 * width
        columns = [(stat, op, values.tolist()) for stat, op, values in stats]
        for i, g in enumerate(uniq.tolist()):
            s, offset = divmod(g, nb)
            b = first + offset
            rkey = self.bucket_key(b)
            prefix = self._field(labels[s])
            deadline = (b + 1) * width + self.over
            for stat, op, values in columns:
                queue.add(rkey, prefix + stat, op, values[i], ttl, deadline)
            if hist is not None:
                for j in np.flatnonzero(hist[i]).tolist():
                    queue.add(rkey, f"{prefix}h{j}", ADD, float(hist[i, j]), ttl, deadline)

    def _queue_latest(self, keys: list[Key], ts: np.ndarray, vs: np.ndarray) -> None:
        latest: dict[Key, tuple[float, float]] = {}
        for key, t, v in zip(keys, ts.tolist(), vs.tolist(), strict=True):
            seen = latest.get(key)
            if seen is None or t >= seen[0]:
                latest[key] = (t, v)
        rkey = f"{self._base}:l"
        ttl = self.keep + self.over
        for key, pair in latest.items():
            self.state.queue.add(rkey, self._field(key) + "l", LATEST, pair, ttl)

    def _queue_streaks(self, keys: list[Key], vs: np.ndarray) -> None:
        """Per label set: hits since the last miss, and whether a miss happened (then it is a reset)."""
        streaks: dict[Key, list] = {}
        for key, v in zip(keys, vs.tolist(), strict=True):
            slot = streaks.get(key)
            if v == 0.0:
                streaks[key] = [SET, 0.0]
            elif slot is None:
                streaks[key] = [ADD, 1.0]
            else:
                slot[1] += 1.0
        rkey = f"{self._base}:k"
        ttl = 2 * self.over
        for key, (op, count) in streaks.items():
            self.state.queue.add(rkey, self._field(key) + "k", op, count, ttl)

    # -- read path: one round trip per evaluation -----------------------------------------------
    async def refresh(self, now: float) -> bool:
        """Send what is buffered, read every sidecar's buckets, rebuild; False if Redis could not be read."""
        if not self.state.up:
            self.refresh_failures += 1
            return False
        self.drain(now)
        self._replay = ([], array("d"), array("d"))
        try:
            data = await self.state.flush_and_read(self.read_keys(now))
        except StateUnavailable:
            self._replay = None
            self.refresh_failures += 1
            return False
        except Exception:
            self._replay = None
            self.refresh_failures += 1
            log.warning("shared window %s: reading from redis failed", self.rule.id, exc_info=True)
            return False
        replay, self._replay = self._replay, None
        fresh = self._rebuild(data, now)
        keys, ts, vs = replay
        if self.streak:
            for key, t, v in zip(keys, ts, vs, strict=True):
                fresh.observe_outcome(key, t, v == 1.0)
        else:
            for key, t, v in zip(keys, ts, vs, strict=True):
                fresh.observe(key, t, v)
        self._dropped_before += self.merged.dropped
        self._late_before += self.merged.late
        self.merged = fresh
        self.refreshes += 1
        self.refreshed_at = now
        return True

    def _rebuild(self, data: list[dict[str, str]], now: float) -> LocalWindow:
        fresh: LocalWindow = self._factory()
        width, nb = self.width, self.nb
        cur = int(now // width)
        rows: dict[str, int] = {}

        def row_of(part: str) -> int:
            row = rows.get(part)
            if row is None:
                try:
                    key = tuple(str(x) for x in json.loads(part))
                except (ValueError, TypeError):
                    row = -1
                else:
                    row = fresh._row(key)
                rows[part] = row
            return row

        seen_until: dict[int, float] = {}
        for i, b in enumerate(range(cur - nb + 1, cur + 1)):
            fields = data[i] if i < len(data) else None
            if not fields:
                continue
            slot = b % nb
            fresh.slot_idx[slot] = b
            end = min((b + 1) * width, now)
            for name, raw in fields.items():
                part, sep, stat = name.rpartition(SEP)
                if not sep or not stat:
                    continue
                row = row_of(part)
                if row < 0:
                    continue
                try:
                    value = float(raw)
                except ValueError:
                    continue
                kind = stat[0]
                if kind == "c":
                    fresh.count[row, slot] = value
                    if value > 0 and end > seen_until.get(row, -math.inf):
                        seen_until[row] = end
                elif kind == "s":
                    fresh.sum[row, slot] = value
                elif kind == "x" and fresh.split is not None:
                    fresh.split[row, slot] = value
                elif kind == "n" and fresh.min is not None:
                    fresh.min[row, slot] = value
                elif kind == "m" and fresh.max is not None:
                    fresh.max[row, slot] = value
                elif kind == "h" and fresh.hist is not None:
                    j = int(stat[1:]) if stat[1:].isdigit() else -1
                    if 0 <= j < fresh.hist.shape[2]:
                        fresh.hist[row, slot, j] = int(value)
        for row, t in seen_until.items():  # approximate last times (read by forget()); exact below when kept
            fresh.last_time[row] = t
        index = nb
        if self.track_last:
            fields = data[index] if index < len(data) else {}
            index += 1
            for name, raw in (fields or {}).items():
                part, sep, _stat = name.rpartition(SEP)
                t_text, colon, v_text = raw.partition(":")
                if not sep or not colon:
                    continue
                row = row_of(part)
                if row < 0:
                    continue
                try:
                    fresh.last_time[row] = min(float(t_text), now)
                    fresh.last_value[row] = float(v_text)
                except ValueError:
                    continue
        if self.streak and fresh._streak is not None:
            fields = data[index] if index < len(data) else {}
            for name, raw in (fields or {}).items():
                part, sep, _stat = name.rpartition(SEP)
                if not sep:
                    continue
                row = row_of(part)
                if row < 0:
                    continue
                try:
                    fresh._streak[row] = int(float(raw))
                except ValueError:
                    continue
        fresh.dropped = 0  # series beyond the limit in Redis are not this sidecar's drops
        return fresh


def shared_window_factory(state: RedisState) -> Callable[[Rule, Callable[[], Any]], SharedWindow]:
    """What the rule engine calls for a `scope: global` rule (see RuleEngine.shared_windows)."""

    def make(rule: Rule, factory: Callable[[], Any]) -> SharedWindow:
        return SharedWindow(rule, state, factory)

    return make
