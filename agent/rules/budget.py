"""Calendar budgets: spend per label set over a day, week or month, in a time zone.

Events add to an in-memory delta (hot path, no I/O). Each evaluation flushes the deltas
to the state backend (`incr_many` on one hash per rule and period) and reads the totals
back, so the accumulators survive a restart (SQLite in `state_dir`) and, with a shared
backend, add up across every sidecar. A threshold alert fires per crossed fraction of
the limit (`threshold="80%"`); with `forecast: true`, one more fires when the spend so far,
projected linearly to the end of the period, reaches the limit before the spend does.
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
from agent.rules.evaluate import label_getter
from agent.rules.model import Rule
from agent.rules.signals import SIGNALS
from agent.rules.state import AlertStates, Transitions
from agent.rules.template import Value, format_number
from agent.state.base import StateBackend

Key = tuple[str, ...]
KEEP_PERIODS = 35 * 86400.0  # accumulators outlive their period by this much (reports, late events)
MAX_KEYS = 50000


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


class BudgetRule:
    def __init__(self, rule: Rule, clock: Callable[[], float]) -> None:
        assert rule.budget is not None
        self.rule = rule
        self.spec = spec = rule.budget
        signal = SIGNALS[spec.signal]
        self.kinds = signal.kinds
        self.extract = signal.extract
        self.where = [(label_getter(m.label), m) for m in spec.where]
        self.by = spec.by
        self.by_getters = [label_getter(name) for name in spec.by]
        self.keep_empty = rule.keep_empty_labels
        self.tz = ZoneInfo(spec.timezone)
        self.clock = clock
        self.states = AlertStates(rule.for_, rule.keep_firing_for)
        self.prefix = f"gatewatch:budget:{rule.id}:{rule.window_identity()}"
        self.period = period_of(clock(), spec.period, self.tz)
        self._last_period = self.period
        self.pending: dict[str, dict[str, float]] = {}  # period id -> field -> delta
        self.totals: dict[Key, float] = {}
        self.loaded = False
        self.dropped = 0
        self.health = "unknown"
        self.last_error = ""
        self.last_evaluation: float | None = None
        self.evaluation_seconds = 0.0
        self.template_errors = 0

    # -- hot path ------------------------------------------------------------------
    def observe(self, e: Event) -> None:
        v = self.extract(e)
        if not v:
            return
        for get, match in self.where:
            if not match(get(e)):
                return
        key = tuple([g(e) for g in self.by_getters])
        if not self.keep_empty and "" in key:
            return
        t = e.time
        p = self._last_period
        if not p.start <= t < p.end:
            p = period_of(t, self.spec.period, self.tz)
            self._last_period = p
        bucket = self.pending.get(p.id)
        if bucket is None:
            bucket = self.pending[p.id] = {}
        field = json.dumps(key)
        if field not in bucket and len(bucket) >= MAX_KEYS:
            self.dropped += 1
            return
        bucket[field] = bucket.get(field, 0.0) + v
        if p.id == self.period.id:
            self.totals[key] = self.totals.get(key, 0.0) + v

    # -- state -------------------------------------------------------------------------
    def state_key(self, period_id: str) -> str:
        return f"{self.prefix}:{period_id}"

    async def sync(self, state: StateBackend, now: float) -> None:
        """Flush deltas, then read this period's totals back (they include other sidecars')."""
        current = period_of(now, self.spec.period, self.tz)
        pending, self.pending = self.pending, {}
        try:
            for period_id, amounts in pending.items():
                if amounts:
                    await state.incr_many(self.state_key(period_id), amounts, ttl=current.length + KEEP_PERIODS)
        except Exception:
            for period_id, amounts in pending.items():  # keep them for the next try
                bucket = self.pending.setdefault(period_id, {})
                for field, amount in amounts.items():
                    bucket[field] = bucket.get(field, 0.0) + amount
            raise
        counters = await state.get_counters(self.state_key(current.id))
        totals: dict[Key, float] = {}
        for field, amount in counters.items():
            try:
                totals[tuple(str(x) for x in json.loads(field))] = float(amount)
            except (ValueError, TypeError):
                continue
        for field, amount in self.pending.get(current.id, {}).items():  # arrived during the awaits
            key = tuple(json.loads(field))
            totals[key] = totals.get(key, 0.0) + amount
        self.period = current
        self.totals = totals
        self.loaded = True

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
