"""Calendar budgets: spend per label set over a day, week or month, in a time zone.

Events add to an in-memory delta (hot path, no I/O). Each evaluation flushes the deltas
to the state backend (`incr_many` on one hash per rule and period) and reads the totals
back, so the accumulators survive a restart (SQLite in `state_dir`) and, with a shared
backend, add up across every sidecar. A threshold alert fires per crossed fraction of
the limit (`threshold="80%"`); with `forecast: true`, one more fires when the spend so far,
projected linearly to the end of the period, reaches the limit before the spend does.

Memory and the stored hashes are bounded: a rule tracks at most
`rule_engine.max_series_per_rule` label sets per period; spend of any further one is added
to a single `__overflow__` key (counted on `gatewatch_rule_series_dropped`, never lost,
never alerted on: no one limit applies to many keys' spend together).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from agent.events import Event
from agent.rules.batch import BatchMemo, key_function
from agent.rules.evaluate import label_getter
from agent.rules.model import Rule
from agent.rules.signals import SIGNALS
from agent.rules.state import AlertStates, Transitions
from agent.rules.template import Value, format_number
from agent.state.base import StateBackend

Key = tuple[str, ...]
KEEP_PERIODS = 35 * 86400.0  # accumulators outlive their period by this much (reports, late events)


@dataclass(frozen=True)
class Period:
    id: str
    start: float
    end: float

    @property
    def length(self) -> float:
        return self.end - self.start


def period_of(t: float, period: str, tz: ZoneInfo) -> Period:
    """The calendar period containing epoch time `t` (DST-aware wall-clock boundaries)."""
    local = datetime.fromtimestamp(t, tz)
    day = local.date()
    if period == "day":
        first, nxt, ident = day, day + timedelta(days=1), day.isoformat()
    elif period == "week":
        first = day - timedelta(days=day.weekday())
        nxt = first + timedelta(days=7)
        iso = first.isocalendar()
        ident = f"{iso.year}-W{iso.week:02d}"
    else:
        first = day.replace(day=1)
        nxt = (first + timedelta(days=32)).replace(day=1)
        ident = f"{first.year}-{first.month:02d}"
    start = datetime(first.year, first.month, first.day, tzinfo=tz).timestamp()
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp()
    return Period(ident, start, end)


def percent_label(fraction: float) -> str:
    return f"{format_number(round(fraction * 100, 2))}%"


OVERFLOW = "__overflow__"


class BudgetRule:
    def __init__(self, rule: Rule, clock: Callable[[], float], max_series: int = 10000) -> None:
        assert rule.budget is not None
        self.rule = rule
        self.spec = spec = rule.budget
        signal = SIGNALS[spec.signal]
        self.kinds = signal.kinds
        self.extract = signal.extract
        self.unit = signal.unit  # the value is the period's spend (or its projection) in the signal's unit
        self.where = [(label_getter(m.name), m) for m in spec.where]
        self.by = spec.by
        self.by_getters = [label_getter(name) for name in spec.by]
        self._by = tuple(spec.by)
        self._keys_of = key_function(self._by, self.by_getters)
        self.keep_empty = rule.keep_empty_labels
        # label sets tracked per period (rule_engine.max_series_per_rule); spend of any further
        # label set is folded into one OVERFLOW key, so nothing is lost and memory is bounded
        self.max_series = max(1, max_series)
        self.overflow_key: Key = (OVERFLOW,) * max(1, len(spec.by))
        self.overflow_field = json.dumps(self.overflow_key)
        self.tz = ZoneInfo(spec.timezone)
        self.clock = clock
        self.states = AlertStates(rule.for_, rule.keep_firing_for)
        self.prefix = f"gatewatch:budget:{rule.id}:{rule.window_identity()}"
        self.period = period_of(clock(), spec.period, self.tz)
        self._last_period = self.period
        # period id -> field (JSON of the label set) -> delta not yet in the state backend; read
        # and emptied by sync() and by the Redis flush tick (agent/state/feature.py)
        self.pending: dict[str, dict[str, float]] = {}
        self._fields: dict[Key, str] = {}  # json.dumps per label set once, not per event
        self.totals: dict[Key, float] = {}
        self.loaded = False
        self.dropped = 0  # observations (and, at a flush, label sets) folded into the overflow key
        self.health = "unknown"
        self.last_error = ""
        self.last_evaluation: float | None = None
        self.evaluation_seconds = 0.0
        self.template_errors = 0

    # -- hot path ------------------------------------------------------------------
    def observe_batch(self, batch: BatchMemo) -> None:
        """The batch's spend, event by event in arrival order (so every sum is the one `observe` makes)."""
        kinds = self.kinds
        if not batch.of(kinds):
            return
        keys, times, values = batch.select(kinds, self._by, self._keys_of, self.extract, self.where, self.keep_empty,
                                           truthy=True)
        if keys:
            self._add(keys, times, values)

    def observe(self, e: Event) -> None:
        """One event (tests, tools); the engine feeds whole batches to `observe_batch`."""
        self.observe_batch(BatchMemo([e]))

    def _add(self, keys: list[Key], times: list[float], values: list[float]) -> None:
        # periods first: the only step that can raise (a bad time) changes nothing yet, so the
        # engine's event-by-event retry of a failed batch adds nothing twice
        periods = []
        p = self._last_period
        for t in times:
            if not p.start <= t < p.end:
                p = period_of(t, self.spec.period, self.tz)
            periods.append(p)
        self._last_period = p
        totals = self.totals
        pending = self.pending
        current = self.period.id
        fields = self._fields
        if len(fields) > 4 * (self.max_series + 1):
            fields.clear()
        last: Period | None = None
        bucket: dict[str, float] = {}
        for key, p, v in zip(keys, periods, values, strict=True):
            if not -math.inf < v < math.inf:  # NaN/inf would poison the period's total for good
                continue
            if p is not last:
                last = p
                bucket = pending.setdefault(p.id, {})
            if p.id == current:
                if key not in totals and self._full(totals):
                    key = self.overflow_key
                    self.dropped += 1
                field = fields.get(key)
                if field is None:
                    field = fields[key] = json.dumps(key)
                bucket[field] = bucket.get(field, 0.0) + v
                totals[key] = totals.get(key, 0.0) + v
            else:  # another period (late events, or a new one before the next sync)
                field = fields.get(key)
                if field is None:
                    field = fields[key] = json.dumps(key)
                if field not in bucket and len(bucket) - (self.overflow_field in bucket) >= self.max_series:
                    field = self.overflow_field
                    self.dropped += 1
                bucket[field] = bucket.get(field, 0.0) + v

    def _full(self, tracked: dict[Key, float]) -> bool:
        return len(tracked) - (self.overflow_key in tracked) >= self.max_series

    # -- state -------------------------------------------------------------------------
    def state_key(self, period_id: str) -> str:
        return f"{self.prefix}:{period_id}"

    async def sync(self, state: StateBackend, now: float) -> None:
        """Flush deltas, then take this period's totals (they include other sidecars').

        Each period's stored fields are read before its deltas are added, and a label set
        the backend does not hold yet is only added while it holds fewer than `max_series`:
        the rest goes to the overflow field, so the persisted hash stays bounded too (with a
        shared backend, sidecars racing on the last free places can add a few more; the
        in-memory view folds those)."""
        current = period_of(now, self.spec.period, self.tz)
        pending, self.pending = _finite_amounts(self.pending), {}
        done: set[str] = set()
        try:
            for period_id, amounts in pending.items():
                if amounts:
                    key = self.state_key(period_id)
                    fields = self._bounded(await state.get_counters(key), amounts)
                    await state.incr_many(key, fields, ttl=current.length + KEEP_PERIODS)
                done.add(period_id)
        except Exception:
            for period_id, amounts in pending.items():  # keep what did not reach the backend for the next try
                if period_id in done:
                    continue
                bucket = self.pending.setdefault(period_id, {})
                for field, amount in amounts.items():
                    bucket[field] = bucket.get(field, 0.0) + amount
            raise
        # read after the flush: every sidecar's increments, ours included (a queueing backend sends them now)
        counters = await state.get_counters(self.state_key(current.id))
        totals = self._view(counters)
        for field, amount in self.pending.get(current.id, {}).items():  # arrived during the awaits
            k = tuple(json.loads(field))
            if k not in totals and self._full(totals):
                k = self.overflow_key
            totals[k] = totals.get(k, 0.0) + amount
        self.period = current
        self.totals = totals
        self.loaded = True

    def _bounded(self, stored: dict[str, float], amounts: dict[str, float]) -> dict[str, float]:
        """Deltas as backend fields: label sets the backend holds, new ones while it holds fewer than
        `max_series`, the overflow field for the rest."""
        over = self.overflow_field
        room = self.max_series - (len(stored) - (over in stored))
        out: dict[str, float] = {}
        for field, amount in amounts.items():
            if field not in stored and field not in out and field != over:
                if room <= 0:
                    self.dropped += 1
                    field = over
                else:
                    room -= 1
            out[field] = out.get(field, 0.0) + amount
        return out

    def _view(self, counters: dict[str, float]) -> dict[Key, float]:
        """Stored fields -> totals, at most `max_series` label sets (the largest) plus the overflow key."""
        totals: dict[Key, float] = {}
        for field, amount in counters.items():
            try:
                totals[tuple(str(x) for x in json.loads(field))] = float(amount)
            except (ValueError, TypeError):
                continue
        over = self.overflow_key
        if len(totals) - (over in totals) <= self.max_series:
            return totals
        folded = totals.pop(over, 0.0)
        ranked = sorted(totals.items(), key=lambda kv: kv[1], reverse=True)
        kept = dict(ranked[: self.max_series])
        for _, amount in ranked[self.max_series:]:
            folded += amount
        kept[over] = folded
        return kept

    # -- evaluation ------------------------------------------------------------------
    def labels_for(self, key: Key) -> dict[str, str]:
        labels = {"alertname": self.rule.alert}
        for name, value in zip(self.by, key[:-1], strict=False):
            if value != "":
                labels[name] = value
        labels["threshold"] = key[-1]
        labels.update(self.rule.labels)
        return labels

    def evaluate(self, now: float) -> Transitions:
        spec = self.spec
        period = self.period if self.period.start <= now < self.period.end else period_of(now, spec.period, self.tz)
        if period.id != self.period.id:
            self.totals = {}  # a new period: sync() fills it in
        elapsed = max(0.0, min(1.0, (now - period.start) / period.length))
        true: dict[Key, float] = {}
        contexts: dict[Key, dict[str, Any]] = {}
        for key, spend in self.totals.items():
            if key == self.overflow_key:
                continue  # many label sets' spend together: no one limit applies to it
            limit = spec.limit_for(key)
            if not limit:
                continue
            usage = spend / limit
            projected = spend / elapsed if elapsed > 0 else math.inf
            ctx = {"limit": Value(limit), "spend": Value(spend), "usage": Value(usage),
                   "projected": Value(projected if math.isfinite(projected) else spend), "period": period.id}
            for fraction in spec.thresholds:
                if usage >= fraction:
                    k = (*key, percent_label(fraction))
                    true[k] = spend
                    contexts[k] = ctx
            if spec.forecast and elapsed >= spec.forecast_min_elapsed and spend < limit <= projected:
                k = (*key, "forecast")
                true[k] = projected
                contexts[k] = ctx
        transitions = self.states.update(now, true, self.labels_for)
        for alert in self.states.active.values():
            if alert.key in contexts:
                self._render(alert, contexts[alert.key])
        return transitions

    def _render(self, alert: Any, extra: dict[str, Any]) -> None:
        ctx = {"value": Value(alert.value), "labels": alert.labels, "threshold": alert.labels.get("threshold", ""),
               "count": 0, "rule": self.rule.alert, "over": self.spec.period, **extra}
        out = {}
        for name, tmpl in self.rule.annotations.items():
            try:
                out[name] = tmpl.render(ctx)
            except Exception as exc:
                self.template_errors += 1
                out[name] = f"{tmpl.source} (template error: {type(exc).__name__}: {exc})"
        alert.annotations = out

    def series(self) -> int:
        return len(self.totals)

    def top(self, n: int = 100) -> list[tuple[Key, float, float | None]]:
        """The `n` largest spenders of the current period: (key, spend, limit)."""
        ranked = sorted(self.totals.items(), key=lambda kv: kv[1], reverse=True)[:n]
        return [(key, spend, self.spec.limit_for(key)) for key, spend in ranked]


def _finite_amounts(pending: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Deltas without non-finite amounts: one NaN stored would fail every later write of the
    period (SQLite stores NaN as NULL) and freeze the budget until a restart lost it."""
    for amounts in pending.values():
        bad = [field for field, amount in amounts.items() if not math.isfinite(amount)]
        for field in bad:
            del amounts[field]
    return pending
