"""One signal rule compiled for the hot path and evaluated over its window.

`observe(event)` runs for every event of the kinds the rule's signal reads: extract the
number, check `where`, build the key from `by`, append to the window. `evaluate(now)`
turns the window into one value per key with numpy, applies the threshold (per-key
overrides included) and feeds the keys that hold to the alert state machine.

Percentiles decide exactly: the histogram has the rule's thresholds among its
boundaries, so "p95 > 20" is answered by counting observations above 20, and the value
shown (interpolated inside the bucket, clamped to the window's min/max) is consistent
with that answer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from agent.enrich import Catalog
from agent.events import LABEL_GETTERS, Event
from agent.rules import template
from agent.rules.batch import BatchMemo, key_function
from agent.rules.freshness import DEFAULT_MAX_AGE, Freshness
from agent.rules.model import Rule
from agent.rules.signals import SIGNALS
from agent.rules.state import ActiveAlert, AlertStates, Transitions
from agent.state.windows import Key, LocalWindow, Window, WindowView

log = logging.getLogger(__name__)

Getter = Callable[[Event], str]
DEFAULT_BUCKETS = 20
HIST_BUCKETS = 10  # percentile windows carry a histogram per bucket: fewer, wider buckets


def label_getter(name: str) -> Getter:
    getter = LABEL_GETTERS.get(name)
    if getter is not None:
        return getter
    if name.startswith("tag_"):
        prefix = name[4:] + ":"
        cut = len(prefix)

        def tag(e: Event) -> str:
            found = ""
            for t in e.tags:
                if t.startswith(prefix):
                    found = t[cut:]
            return found

        return tag
    return lambda e: e.label(name)


def threshold_bounds(rule: Rule) -> list[float]:
    """Histogram boundaries a percentile rule needs so its thresholds are decided exactly."""
    out = []
    for above, below in [(rule.above, rule.below), *((o.above, o.below) for o in rule.overrides)]:
        if above is not None:
            out.append(float(above))
        if below is not None:
            out.append(float(np.nextafter(below, -np.inf)))
    return out


def make_window(rule: Rule, clock: Callable[[], float], max_series: int) -> Window:
    """Window factory; `scope: global` windows get a shared implementation when a backend provides one."""
    signal = SIGNALS[rule.signal]
    if rule.quantile is not None:
        bounds = list(signal.bounds) + threshold_bounds(rule)
        # one threshold for every key: count the observations beyond it exactly, per bucket, so
        # the condition costs two matrix-vector products and the histogram is only read for
        # the keys whose condition holds
        split = rule.threshold if not rule.overrides else None
        return LocalWindow(rule.over, HIST_BUCKETS, minmax=True, bounds=bounds, max_series=max_series, clock=clock,
                           split=split, split_below=rule.below is not None)
    return LocalWindow(rule.over, DEFAULT_BUCKETS, minmax=rule.aggregate in ("min", "max"),
                       streak=rule.aggregate == "consecutive", max_series=max_series, clock=clock,
                       sums=rule.aggregate not in ("count", "absent", "consecutive", "last"),
                       last_values=rule.aggregate == "last")


class CompiledRule:
    def __init__(self, rule: Rule, clock: Callable[[], float], max_series: int = 10000,
                 window: Window | None = None, header_max_age: float = DEFAULT_MAX_AGE) -> None:
        self.rule = rule
        signal = SIGNALS[rule.signal]
        self.signal = signal
        self.kinds = signal.kinds
        self.extract = signal.extract
        self.outcome = signal.outcome if rule.aggregate == "consecutive" else None
        self.where = [(label_getter(m.name), m) for m in rule.where]
        self.by = rule.by
        self.by_getters = [label_getter(name) for name in rule.by]
        self.keep_empty = rule.keep_empty_labels
        self.window = window if window is not None else make_window(rule, clock, max_series)
        self.states = AlertStates(rule.for_, rule.keep_firing_for)
        self.health = "unknown"
        self.last_error = ""
        self.last_evaluation: float | None = None
        self.evaluation_seconds = 0.0
        self.template_errors = 0
        self._bounds = getattr(self.window, "bounds", None)
        self._over_text = _fmt_duration(rule.over)
        self._rows_cache: tuple[int, Any] | None = None
        self._by = tuple(rule.by)
        self._keys_of = key_function(self._by, self.by_getters)
        self._observe_many = getattr(self.window, "observe_many", None)
        self._observe_outcome_many = getattr(self.window, "observe_outcome_many", None)
        # the latest reading of a signal that goes stale, read while fresh (aggregate `last` only)
        self.freshness = (Freshness(signal.expires, header_max_age)
                          if signal.expires is not None and rule.aggregate == "last" else None)

    # -- hot path ----------------------------------------------------------------------
    def observe_batch(self, batch: BatchMemo) -> None:
        """Every event of the batch this rule reads, in one pass (same result as `observe` per event)."""
        kinds = self.kinds
        if not batch.of(kinds):
            return
        outcome = self.outcome
        keys, times, values = batch.select(kinds, self._by, self._keys_of, outcome or self.extract, self.where,
                                           self.keep_empty)
        if not keys:
            return
        if self.freshness is not None:
            fkeys, ftimes, fvalid = batch.select(kinds, self._by, self._keys_of, self.freshness.expires, self.where,
                                                 self.keep_empty)
            self.freshness.observe_many(fkeys, ftimes, fvalid)
        window = self.window
        if outcome is not None:
            if self._observe_outcome_many is not None:
                self._observe_outcome_many(keys, times, values)
            else:
                for key, t, hit in zip(keys, times, values, strict=True):
                    window.observe_outcome(key, t, hit)
        elif self._observe_many is not None:
            self._observe_many(keys, times, values)
        else:  # a window without a batch method (the shared one)
            for key, t, value in zip(keys, times, values, strict=True):
                window.observe(key, t, value)

    def observe(self, e: Event) -> None:
        """One event (tests, tools); the engine feeds whole batches to `observe_batch`."""
        outcome = self.outcome
        if outcome is not None:
            hit = outcome(e)
            if hit is None:
                return
            value = 0.0
        else:
            v = self.extract(e)
            if v is None:
                return
            value = v
        for get, match in self.where:
            if not match.matches_value(get(e)):
                return
        key = tuple([g(e) for g in self.by_getters])
        if not self.keep_empty and "" in key:
            return
        if outcome is not None:
            self.window.observe_outcome(key, e.time, hit)  # type: ignore[arg-type]
        else:
            self.window.observe(key, e.time, value)
            if self.freshness is not None:
                seconds = self.freshness.expires(e)
                if seconds is not None:
                    self.freshness.observe(key, e.time, seconds)

    # -- evaluation ----------------------------------------------------------------------
    def labels_for(self, key: Key) -> dict[str, str]:
        labels = {"alertname": self.rule.alert}
        for name, value in zip(self.by, key, strict=False):
            if value != "":
                labels[name] = value
        labels.update(self.rule.labels)
        return labels

    def _thresholds(self, view: WindowView) -> tuple[Any, Any]:
        """(threshold, min_events): scalars, or per-row arrays when overrides exist."""
        rule = self.rule
        if not rule.overrides:
            return rule.threshold, rule.min_events
        thr = np.full(view.n, rule.threshold if rule.threshold is not None else np.nan)
        mins = np.full(view.n, float(rule.min_events))
        for row, key in enumerate(view.keys[: view.n]):
            if key is None:
                continue
            labels = dict(zip(self.by, key, strict=False))
            for o in rule.overrides:
                if o.applies(labels):
                    value = o.above if o.above is not None else o.below
                    if value is not None:
                        thr[row] = value
                    if o.min_events is not None:
                        mins[row] = o.min_events
                    break
        return thr, mins

    def compute(self, now: float, catalog: Catalog | None = None) -> tuple[np.ndarray, np.ndarray, WindowView, Any]:
        """(values, condition mask, view, thresholds) for every row of the window."""
        rule = self.rule
        view = self.window.view(now)
        agg = rule.aggregate
        cnt = view.count
        thr, min_events = self._thresholds(view)
        with np.errstate(divide="ignore", invalid="ignore"):
            if rule.quantile is not None:
                values, cond = self._percentile(view, thr)
                return values, cond & (cnt >= min_events), view, thr
            if agg == "absent":
                age = now - view.last_time
                cond = np.isfinite(view.last_time) & (age >= rule.over) & (age < rule.forget_after)
                return age, cond, view, thr
            if agg == "count":
                values = cnt
            elif agg == "sum":
                values = view.sum
            elif agg == "rate":
                values = view.sum / rule.over
            elif agg in ("avg", "ratio") and not self.signal.derived:
                values = np.where(cnt > 0, view.sum / cnt, np.nan)
            elif agg == "ratio":
                values = self._quota(view, catalog)
            elif agg == "min":
                assert view.min is not None  # min/max rules keep them (the window's minmax)
                values = np.where(cnt > 0, view.min, np.nan)
            elif agg == "max":
                assert view.max is not None
                values = np.where(cnt > 0, view.max, np.nan)
            elif agg == "last":
                present = view.last_time > now - rule.over
                if self.freshness is not None:
                    present &= self.freshness.mask(view.keys, view.last_time, now)
                values = np.where(present, view.last_value, np.nan)
                cnt = present.astype(np.float64)
            elif agg == "consecutive":
                assert view.streak is not None
                fresh = view.last_time > now - rule.over
                values = np.where(fresh, view.streak, 0.0)
                cnt = values
            else:  # validated at load time; a new aggregate without code here is a bug
                raise ValueError(f"aggregate {agg} not implemented")
            if rule.above is not None:
                cond = values > thr
            else:
                cond = values < thr
        return values, cond & (cnt >= min_events) & ~np.isnan(values), view, thr

    def _percentile(self, view: WindowView, thr: Any) -> tuple[np.ndarray, np.ndarray]:
        rule = self.rule
        q = rule.quantile or 0.5
        n = view.n
        total = view.count
        rank = np.maximum(np.ceil(q * total - 1e-9), 1.0)
        if view.split is not None:
            # nearest rank: p_q > T  <=>  fewer than `rank` observations are <= T;
            #               p_q < T  <=>  at least `rank` observations are < T
            if rule.above is not None:
                cond = (total - view.split) < rank
            else:
                cond = view.split >= rank
            cond &= total > 0
            values = np.full(n, np.nan)
            rows = np.nonzero(cond)[0]
            if len(rows):
                values[rows] = self._interpolate(view, rows, rank[rows])
            return values, cond
        rows = np.arange(n)
        values = self._interpolate(view, rows, rank)
        values[total == 0] = np.nan
        assert view.hist_rows is not None and self._bounds is not None
        cum = np.cumsum(view.hist_rows(rows), axis=1)
        bounds = self._bounds
        m = len(bounds)
        target = np.asarray(thr, dtype=np.float64)
        if rule.below is not None:
            target = np.nextafter(target, -np.inf)
        t_idx = np.broadcast_to(np.minimum(np.searchsorted(bounds, target, side="left"), m - 1), (n,))
        at_or_below = cum[rows, t_idx]  # thresholds are histogram boundaries: exact counts
        if rule.above is not None:
            cond = at_or_below < rank
        else:
            cond = at_or_below >= rank
        return values, cond & (total > 0)

    def _interpolate(self, view: WindowView, rows: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """Percentile values of some rows: linear inside the histogram bucket holding the rank,
        the bucket's edges clamped to the window's min and max."""
        assert view.hist_rows is not None and self._bounds is not None
        assert view.min is not None and view.max is not None
        hist = view.hist_rows(rows).astype(np.float64)
        cum = np.cumsum(hist, axis=1)
        bounds = self._bounds
        m = len(bounds)
        j = np.minimum((cum < rank[:, None]).sum(axis=1), m)
        idx = np.arange(len(rows))
        wmin, wmax = view.min[rows], view.max[rows]
        lower = np.maximum(np.where(j > 0, bounds[np.maximum(j - 1, 0)], wmin), wmin)
        upper = np.minimum(np.where(j < m, bounds[np.minimum(j, m - 1)], wmax), wmax)
        prev = np.where(j > 0, cum[idx, np.maximum(j - 1, 0)], 0.0)
        in_bin = hist[idx, j]
        frac = np.where(in_bin > 0, (rank - prev) / np.where(in_bin > 0, in_bin, 1.0), 1.0)
        return lower + (upper - lower) * frac

    def _quota(self, view: WindowView, catalog: Catalog | None) -> np.ndarray:
        n = view.n
        rpm = np.full(n, np.nan)
        tpm = np.full(n, np.nan)
        if catalog is not None:
            di = self.by.index("deployment")
            for row, key in enumerate(view.keys[:n]):
                if key is None:
                    continue
                dep = catalog.get(key[di])
                if dep is not None:
                    if dep.rpm:
                        rpm[row] = dep.rpm
                    if dep.tpm:
                        tpm[row] = dep.tpm
        minutes = self.rule.over / 60.0
        return np.fmax(view.count / minutes / rpm, view.sum / minutes / tpm)

    def evaluate(self, now: float, catalog: Catalog | None = None) -> Transitions:
        values, cond, view, thr = self.compute(now, catalog)
        rows = np.nonzero(cond)[0]
        keys = view.keys
        per_row = not np.isscalar(thr) and thr is not None
        # one conversion per array, not one numpy scalar per row: thousands of alerts may hold
        row_list = rows.tolist()
        value_list = values[rows].tolist()
        count_list = view.count[rows].tolist()
        thr_list = np.asarray(thr, dtype=np.float64)[rows].tolist() if per_row else None
        scalar_thr = float(thr) if thr is not None and not per_row else math.nan
        true: dict[Key, float] = {}
        extra: dict[Key, tuple[float, float]] = {}
        for i, row in enumerate(row_list):
            key = keys[row]
            if key is None:
                continue
            true[key] = value_list[i]
            extra[key] = (count_list[i], thr_list[i] if thr_list is not None else scalar_thr)
        transitions = self.states.update(now, true, self.labels_for)
        if transitions.resolved:
            self._at_resolve(transitions, values, view)
        active = self.states.active
        for key, (count, threshold) in extra.items():
            self._render(active[key], count, threshold)
        horizon = self.rule.forget_after if self.rule.aggregate == "absent" else self.rule.over + self.rule.over / 10
        self.window.forget(now, horizon, set(self.states.active))
        if self.freshness is not None:
            self.freshness.forget(now, horizon)
        return transitions

    # aggregates whose value is the count of the problem's own events: zero is a real reading
    OCCURRENCE_AGGREGATES = ("count", "sum", "rate", "absent")

    def _at_resolve(self, transitions: Transitions, values: np.ndarray, view: WindowView) -> None:
        """A resolved alert carries the value now, not the one it fired with, and says whether the
        rule still had data: traffic that stopped is not a fix (issue 18)."""
        rows = {key: row for row, key in enumerate(view.keys[: view.n]) if key is not None}
        occurrences = self.rule.aggregate in self.OCCURRENCE_AGGREGATES
        for alert, _ in transitions.resolved:
            row = rows.get(alert.key)
            value = float(values[row]) if row is not None else math.nan
            count = float(view.count[row]) if row is not None else 0.0
            if occurrences:
                alert.value = value if not math.isnan(value) else 0.0
                if self.rule.aggregate != "absent" and row is not None and math.isfinite(view.last_time[row]):
                    alert.last_seen, alert.window = float(view.last_time[row]), float(self.rule.over)
                continue
            alert.no_data = math.isnan(value) or count < max(1, self.rule.min_events)
            alert.value = None if alert.no_data else value  # type: ignore[assignment]

    @property
    def unit(self) -> str:
        """The unit of this rule's value (agent/alerts/units.py formats it)."""
        agg = self.rule.aggregate
        if agg == "absent":
            return "seconds"
        if agg == "rate":
            return f"{self.signal.unit}/s" if self.signal.unit else "per second"
        if agg == "count" and self.signal.unit in ("ratio", "seconds", "USD", "state", "up"):
            return "events"
        return self.signal.unit

    def _render(self, alert: ActiveAlert, count: float, threshold: float, extra: Mapping[str, Any] | None = None
                ) -> None:
        if not self.rule.annotations:
            return
        stamp = (alert.value, count, threshold, alert.state)
        if alert.rendered_for == stamp:
            return  # same inputs, same text
        alert.rendered_for = stamp
        ctx = {"value": template.Value(alert.value), "labels": alert.labels, "threshold": template.Value(threshold),
               "count": int(count), "rule": self.rule.alert, "over": self._over_text}
        if extra:
            ctx.update(extra)
        out = {}
        for name, tmpl in self.rule.annotations.items():
            try:
                out[name] = tmpl.render(ctx)
            except Exception as exc:  # never crash an evaluation on a template
                self.template_errors += 1
                out[name] = f"{tmpl.source} (template error: {type(exc).__name__}: {exc})"
        alert.annotations = out

    def series(self) -> int:
        return len(self.window)


def _fmt_duration(seconds: float) -> str:
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{template.format_number(seconds)}s"
