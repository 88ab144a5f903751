"""Sliding windows in bounded memory: per-key time buckets in numpy arrays.

A rule keeps, for each label set (`key`) it has seen, a ring of `buckets` time buckets
covering `over`. Each bucket holds count, sum and, when the rule needs them, min/max and
a small histogram (fixed boundaries plus the rule's thresholds) for percentiles. Memory is
rows x buckets (x bins), never one entry per event, and rows are capped (`max_series`).

`observe` is on the ingest hot path, so it only appends to three Python lists; the numpy
work happens in `view(now)` at evaluation (or when the buffer grows large), where one
`np.add.at` applies thousands of observations at once. Evaluation is then a handful of
vectorized reductions over all rows, which is what keeps 100 rules x 2,000 label sets
well under the 50 ms budget per interval.

Bucket alignment is global (`floor(t / width)`), so a window at time `now` covers the
`buckets` most recent buckets: between `over - width` and `over` of history. Event time
is used (LiteLLM batches callbacks up to 5 s late); events later than the ring are
counted in `late` and dropped, events from the future are clamped to `now`.

`Window` is the interface a shared (Redis, `scope: global`) implementation provides too.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from itertools import compress
from typing import Protocol

import numpy as np

Key = tuple[str, ...]
FLUSH_AT = 50_000  # buffered observations before an early apply (bounds buffer memory)
_NEVER = np.iinfo(np.int64).min // 4


@dataclass
class WindowView:
    """A snapshot of every row at `now` (arrays of length `n`; free rows have key None)."""

    now: float
    keys: Sequence[Key | None]
    n: int
    count: np.ndarray
    sum: np.ndarray
    min: np.ndarray | None
    max: np.ndarray | None
    last_time: np.ndarray
    last_value: np.ndarray
    streak: np.ndarray | None
    split: np.ndarray | None = None  # observations beyond the split value (exact threshold counts)
    valid: np.ndarray | None = None  # which ring slots are inside the window

    hist_rows: Callable[[np.ndarray], np.ndarray] | None = None  # (rows) -> (len(rows), bins), on demand


class Window(Protocol):
    over: float
    dropped: int  # observations refused by the series limit
    late: int  # observations older than the ring

    def observe(self, key: Key, t: float, value: float) -> None: ...

    def observe_outcome(self, key: Key, t: float, hit: bool) -> None: ...

    def view(self, now: float) -> WindowView: ...

    def forget(self, now: float, horizon: float, keep: set[Hashable]) -> int: ...

    def __len__(self) -> int: ...


class LocalWindow:
    """In-process window; see the module docstring."""

    def __init__(self, over: float, buckets: int = 20, minmax: bool = False,
                 bounds: Sequence[float] | None = None, streak: bool = False, max_series: int = 10000,
                 clock: Callable[[], float] = time.time, split: float | None = None,
                 split_below: bool = False, sums: bool = True, last_values: bool = True) -> None:
        self.over = float(over)
        self.nb = max(1, int(buckets))
        self.width = self.over / self.nb
        self.minmax = minmax
        self.bounds = np.asarray(sorted(set(bounds)), dtype=np.float64) if bounds else None
        self.max_series = max_series
        self.clock = clock
        self.dropped = 0
        self.late = 0
        self._index: dict[Key, int] = {}
        self._keys: list[Key | None] = []
        self._free: list[int] = []
        self._streak: list[int] | None = [] if streak else None
        # observation buffers: array.array appends are as cheap as list appends and hand
        # numpy their memory without a per-element conversion
        self._rows = array("q")
        self._ts = array("d")
        self._vs = array("d")
        self.split_value = split  # count observations > split (< split when split_below) exactly
        self.split_below = split_below
        self.sums = sums  # False when only counts are read (count, absent, consecutive): one pass less
        self.last_values = last_values  # False when only last_time is read
        self.slot_idx = np.full(self.nb, _NEVER, dtype=np.int64)
        self._cap = 0
        self.count = np.zeros((0, self.nb))
        self.sum = np.zeros((0, self.nb))
        self.split = np.zeros((0, self.nb)) if split is not None else None
        self.min = np.zeros((0, self.nb)) if minmax else None
        self.max = np.zeros((0, self.nb)) if minmax else None
        nbins = 0 if self.bounds is None else len(self.bounds) + 1
        self.hist = np.zeros((0, self.nb, nbins), dtype=np.int32) if self.bounds is not None else None
        self.last_time = np.zeros(0)
        self.last_value = np.zeros(0)
        self._grow(16)

    # -- rows ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    def _grow(self, cap: int) -> None:
        extra = cap - self._cap
        if extra <= 0:
            return

        def more(arr: np.ndarray, fill: float) -> np.ndarray:
            pad = np.full((extra, *arr.shape[1:]), fill, dtype=arr.dtype)
            return np.concatenate([arr, pad]) if arr.shape[0] else pad

        self.count = more(self.count, 0.0)
        self.sum = more(self.sum, 0.0)
        if self.split is not None:
            self.split = more(self.split, 0.0)
        if self.min is not None and self.max is not None:
            self.min = more(self.min, np.inf)
            self.max = more(self.max, -np.inf)
        if self.hist is not None:
            self.hist = more(self.hist, 0)
        self.last_time = more(self.last_time, -np.inf)
        self.last_value = more(self.last_value, np.nan)
        self._cap = cap

    def _row(self, key: Key) -> int:
        row = self._index.get(key)
        if row is not None:
            return row
        if self._free:
            row = self._free.pop()
            self._keys[row] = key
            self.last_time[row] = -np.inf
        else:
            if len(self._keys) >= self.max_series:
                self.dropped += 1
                return -1
            row = len(self._keys)
            self._keys.append(key)
            if self._streak is not None:
                self._streak.append(0)
            if row >= self._cap:
                self._grow(min(max(self._cap * 2, 16), max(self.max_series, 16)))
        self._index[key] = row
        return row

    def row_of(self, key: Key) -> int | None:
        return self._index.get(key)

    # -- ingest (hot path) -------------------------------------------------------------
    def observe(self, key: Key, t: float, value: float) -> None:
        row = self._index.get(key)
        if row is None:
            row = self._row(key)
            if row < 0:
                return
        if value != value:  # NaN
            return
        self._rows.append(row)
        self._ts.append(t)
        self._vs.append(value)
        if len(self._rows) >= FLUSH_AT:
            self._apply(self.clock())

    def observe_outcome(self, key: Key, t: float, hit: bool) -> None:
        """For `consecutive`: a hit extends the key's streak, anything else resets it."""
        row = self._index.get(key)
        if row is None:
            row = self._row(key)
            if row < 0:
                return
        assert self._streak is not None
        self._streak[row] = self._streak[row] + 1 if hit else 0
        self._rows.append(row)
        self._ts.append(t)
        self._vs.append(1.0 if hit else 0.0)
        if len(self._rows) >= FLUSH_AT:
            self._apply(self.clock())

    def observe_many(self, keys: Sequence[Key], times: Sequence[float], values: Sequence[float]) -> None:
        """`observe` of a batch, in order: the same rows, buffers and counters as one call per item,
        with the per-item work done by C loops (dict lookups, array conversion)."""
        if not keys:
            return
        total = sum(values)  # raises on a non-number before anything changes; NaN if any value is NaN
        rows = self._rows_of(keys)
        if total != total or -1 in rows:
            keep = [row >= 0 and v == v for row, v in zip(rows, values, strict=True)]
            rows = list(compress(rows, keep))
            times = list(compress(times, keep))
            values = list(compress(values, keep))
            if not rows:
                return
        self._append(rows, times if isinstance(times, list) else list(times),
                     values if isinstance(values, list) else list(values))
        if len(self._rows) >= FLUSH_AT:
            self._apply(self.clock())

    def observe_outcome_many(self, keys: Sequence[Key], times: Sequence[float], hits: Sequence[bool]) -> None:
        """`observe_outcome` of a batch, in order (streaks advance observation by observation)."""
        if not keys:
            return
        assert self._streak is not None
        rows = self._rows_of(keys)
        streak = self._streak
        kept_rows: list[int] = []
        kept_times: list[float] = []
        kept_values: list[float] = []
        for row, t, hit in zip(rows, times, hits, strict=True):
            if row < 0:
                continue
            streak[row] = streak[row] + 1 if hit else 0
            kept_rows.append(row)
            kept_times.append(t)
            kept_values.append(1.0 if hit else 0.0)
        if not kept_rows:
            return
        self._append(kept_rows, kept_times, kept_values)
        if len(self._rows) >= FLUSH_AT:
            self._apply(self.clock())

    def _append(self, rows: list[int], times: list[float], values: list[float]) -> None:
        """Grow the three buffers together or not at all (`fromlist` leaves an array unchanged on
        a bad item; a bad value must not leave the buffers misaligned)."""
        n = len(self._ts)
        self._ts.fromlist(times)
        try:
            self._vs.fromlist(values)
        except Exception:
            del self._ts[n:]
            raise
        self._rows.fromlist(rows)

    def _rows_of(self, keys: Sequence[Key]) -> list[int]:
        """The row of each key, allocating new rows in order; -1 where the series limit refuses one
        (counted in `dropped` once per refused observation, as `observe` does)."""
        get = self._index.get
        rows = [get(k, -1) for k in keys]
        if -1 in rows:
            index = self._index
            for i, row in enumerate(rows):
                if row < 0:
                    key = keys[i]
                    found = index.get(key)
                    rows[i] = found if found is not None else self._row(key)
        return rows

    # -- buffered apply ----------------------------------------------------------------
    def _apply(self, now: float) -> None:
        if not self._rows:
            return
        rows = np.frombuffer(self._rows, dtype=np.int64)
        ts = np.minimum(np.frombuffer(self._ts, dtype=np.float64), now)
        vs = np.frombuffer(self._vs, dtype=np.float64)
        self._rows, self._ts, self._vs = array("q"), array("d"), array("d")
        # last value per row: the observation with the latest time wins
        np.maximum.at(self.last_time, rows, ts)
        if self.last_values:
            latest = ts >= self.last_time[rows]
            self.last_value[rows[latest]] = vs[latest]
        idx = (ts // self.width).astype(np.int64)
        lo, hi = int(idx.min()), int(idx.max())
        first = max(lo, int(now // self.width) - self.nb + 1)  # the oldest bucket still in the ring
        # claim the ring slots of buckets first..hi (a slot holding an older bucket is cleared).
        # A slot can only hold a newer bucket if that one is a whole ring ahead, i.e. beyond
        # `now`: impossible, so after this every observation from `first` on has its slot.
        for bucket in range(first, hi + 1):
            slot = bucket % self.nb
            if self.slot_idx[slot] < bucket:
                self._clear_slot(slot)
                self.slot_idx[slot] = bucket
        if lo < first:
            keep = idx >= first
            kept = int(keep.sum())
            self.late += len(idx) - kept
            if kept == 0:
                return
            rows, idx, vs = rows[keep], idx[keep], vs[keep]
        slots = idx % self.nb
        # ufunc.at on a flat (1-D) view with an operand array of the same dtype takes numpy's
        # fast path: 10-50x faster than (row, slot) tuple indexing or a scalar operand
        flat = rows * self.nb + slots
        np.add.at(self.count.reshape(-1), flat, np.ones(len(flat)))
        if self.sums:
            np.add.at(self.sum.reshape(-1), flat, vs)
        if self.split is not None and self.split_value is not None:
            beyond = vs < self.split_value if self.split_below else vs > self.split_value
            np.add.at(self.split.reshape(-1), flat, beyond.astype(np.float64))
        if self.min is not None and self.max is not None:
            np.minimum.at(self.min.reshape(-1), flat, vs)
            np.maximum.at(self.max.reshape(-1), flat, vs)
        if self.hist is not None and self.bounds is not None:
            bins = np.searchsorted(self.bounds, vs, side="left")
            np.add.at(self.hist.reshape(-1), flat * self.hist.shape[2] + bins, np.ones(len(bins), dtype=np.int32))

    def _clear_slot(self, slot: int) -> None:
        self.count[:, slot] = 0.0
        self.sum[:, slot] = 0.0
        if self.split is not None:
            self.split[:, slot] = 0.0
        if self.min is not None and self.max is not None:
            self.min[:, slot] = np.inf
            self.max[:, slot] = -np.inf
        if self.hist is not None:
            self.hist[:, slot, :] = 0

    # -- evaluation --------------------------------------------------------------------
    def view(self, now: float) -> WindowView:
        self._apply(now)
        n = len(self._keys)
        cur = int(now // self.width)
        valid = (self.slot_idx > cur - self.nb) & (self.slot_idx <= cur)
        weights = valid.astype(np.float64)
        count = self.count[:n] @ weights
        total = self.sum[:n] @ weights
        wmin = wmax = None
        if self.min is not None and self.max is not None:
            if valid.any():
                wmin = self.min[:n, valid].min(axis=1)
                wmax = self.max[:n, valid].max(axis=1)
            else:
                wmin, wmax = np.full(n, np.inf), np.full(n, -np.inf)
        split = self.split[:n] @ weights if self.split is not None else None
        streak = np.asarray(self._streak, dtype=np.float64) if self._streak is not None else None
        hist_rows = None
        if self.hist is not None:
            hist = self.hist

            def hist_rows(rows: np.ndarray) -> np.ndarray:
                """The window's histogram of some rows (percentile values are computed for few rows)."""
                if not valid.any():
                    return np.zeros((len(rows), hist.shape[2]))
                return hist[rows][:, valid, :].sum(axis=1)

        return WindowView(now=now, keys=self._keys, n=n, count=count, sum=total, min=wmin, max=wmax,
                          last_time=self.last_time[:n], last_value=self.last_value[:n], streak=streak, split=split,
                          valid=valid, hist_rows=hist_rows)

    def forget(self, now: float, horizon: float, keep: set[Hashable]) -> int:
        """Free rows with no event for `horizon` (and no active alert): bounded memory."""
        self._apply(now)
        n = len(self._keys)
        stale = np.nonzero(self.last_time[:n] < now - horizon)[0]  # free rows hold +inf
        freed = 0
        for row in stale.tolist():
            key = self._keys[row]
            if key is None or key in keep:
                continue
            del self._index[key]
            self._keys[row] = None
            self.count[row] = 0.0
            self.sum[row] = 0.0
            if self.split is not None:
                self.split[row] = 0.0
            if self.min is not None and self.max is not None:
                self.min[row] = np.inf
                self.max[row] = -np.inf
            if self.hist is not None:
                self.hist[row] = 0
            self.last_time[row] = np.inf  # never stale, never "absent": a free row is skipped cheaply
            self.last_value[row] = np.nan
            if self._streak is not None:
                self._streak[row] = 0
            self._free.append(row)
            freed += 1
        return freed
