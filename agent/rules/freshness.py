"""Readings that go stale: when a provider rate-limit reading stops being true.

`x-ratelimit-remaining-requests: 0` on a 429 is true until the provider's window resets
(`x-ratelimit-reset-requests: 20s`), not for the rule's whole window. A rule over such a
signal (`Signal.expires`) with `aggregate: last` reads, per label set, the latest reading
only while it is fresh: until its reset time, capped at `rule_engine.header_max_age`
(also the lifetime of a reading that names no reset). So one stale zero from a 429 never
pages on a deployment that is healthy again, while a deployment that keeps reporting a low
reading keeps the alert true.

The window keeps the latest value and its time; this keeps, per key, when that reading
expires. A shared (`scope: global`) window may hold a newer reading from another task,
whose reset this task never saw: that one gets `header_max_age`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from agent.events import Event

Key = tuple[str, ...]
DEFAULT_MAX_AGE = 60.0


class Freshness:
    """Expiry of the latest reading per key; fed with the window, read at evaluation."""

    __slots__ = ("expires", "latest", "max_age")

    def __init__(self, expires: Callable[[Event], float | None], max_age: float = DEFAULT_MAX_AGE) -> None:
        self.expires = expires
        self.max_age = float(max_age)
        self.latest: dict[Key, tuple[float, float]] = {}  # key -> (reading time, expires at)

    def valid_until(self, t: float, seconds: float) -> float:
        life = self.max_age if seconds < 0 else min(seconds, self.max_age)
        return t + life

    def observe_many(self, keys: Sequence[Key], times: Sequence[float], seconds: Sequence[float]) -> None:
        latest = self.latest
        for key, t, s in zip(keys, times, seconds, strict=True):
            seen = latest.get(key)
            if seen is None or t >= seen[0]:
                latest[key] = (t, self.valid_until(t, s))

    def observe(self, key: Key, t: float, seconds: float) -> None:
        self.observe_many((key,), (t,), (seconds,))

    def mask(self, keys: Sequence[Key | None], last_time: np.ndarray, now: float) -> np.ndarray:
        """Rows whose latest reading is still true at `now`."""
        n = len(last_time)
        fresh = np.zeros(n, dtype=bool)
        latest = self.latest
        for row in range(min(n, len(keys))):
            key = keys[row]
            t = float(last_time[row])
            if key is None or not np.isfinite(t):
                continue
            seen = latest.get(key)
            until = seen[1] if seen is not None and seen[0] >= t - 1e-6 else t + self.max_age
            fresh[row] = until > now
        return fresh

    def forget(self, now: float, horizon: float) -> None:
        cutoff = now - horizon
        for key in [k for k, (_, until) in self.latest.items() if until < cutoff]:
            del self.latest[key]
