"""Every alert gatewatch currently holds, as Alertmanager's alert provider does.

The router keeps alerts only inside the groups of configured receivers, and the rule
engine only its own; the Alertmanager API v2 and the console need one list of every
alert received (from the rule engine, Prometheus, amtool) with its start, end and last
update. `AlertStore` sits in front of the app's alert receiver, records what passes
and hands everything on unchanged, so routing and delivery do not know it exists.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.alert import Alert, AlertReceiver

DEFAULT_RESOLVE_TIMEOUT = 300.0
MAX_ALERTS = 20000  # beyond this the least recently updated alert is forgotten (and counted)
RESOLVED_RETENTION = 900.0  # resolved alerts stay listable this long, as Alertmanager keeps them until GC


@dataclass
class StoredAlert:
    """One alert as the API shows it: the last version received and when."""

    alert: Alert
    starts_at: float
    updated_at: float
    ends_at: float  # explicit endsAt, or last update + resolve_timeout while it is re-sent
    explicit_end: bool

    def resolved(self, now: float) -> bool:
        return self.alert.state == "resolved" or self.ends_at <= now


class AlertStore:
    """An `AlertReceiver` that remembers what it forwards (bounded, thread-safe)."""

    def __init__(self, inner: AlertReceiver, clock: Callable[[], float] = time.time,
                 resolve_timeout: Callable[[], float] = lambda: DEFAULT_RESOLVE_TIMEOUT,
                 max_alerts: int = MAX_ALERTS) -> None:
        self.inner = inner
        self.clock = clock
        self.resolve_timeout = resolve_timeout
        self.max_alerts = max_alerts
        self.dropped = 0
        self._lock = threading.Lock()
        self._alerts: OrderedDict[str, StoredAlert] = OrderedDict()

    def receive(self, alerts: Sequence[Alert], ends: Sequence[float | None] | None = None) -> None:
        """Record, then forward. `ends` carries a posted alert's explicit endsAt, if any."""
        now = self.clock()
        timeout = self.resolve_timeout()
        with self._lock:
            for i, alert in enumerate(alerts):
                if alert.state not in ("firing", "resolved"):
                    continue
                fp = alert.fingerprint
                end = ends[i] if ends is not None else None
                old = self._alerts.pop(fp, None)
                starts = alert.fired_at or alert.active_at or now
                if old is not None and not old.resolved(now):
                    starts = min(starts, old.starts_at)
                if alert.state == "resolved":
                    ends_at = alert.resolved_at or now
                elif end is not None:
                    ends_at = end
                else:
                    ends_at = now + timeout
                self._alerts[fp] = StoredAlert(alert, starts, now, ends_at, end is not None)
            self._gc(now)
        self.inner.receive(alerts)

    def _gc(self, now: float) -> None:
        for fp in [fp for fp, s in self._alerts.items() if s.resolved(now) and s.ends_at + RESOLVED_RETENTION < now]:
            del self._alerts[fp]
        while len(self._alerts) > self.max_alerts:
            self._alerts.popitem(last=False)
            self.dropped += 1

    def alerts(self) -> list[StoredAlert]:
        with self._lock:
            self._gc(self.clock())
            return list(self._alerts.values())

    def get(self, fingerprint: str) -> StoredAlert | None:
        with self._lock:
            return self._alerts.get(fingerprint)

    def __len__(self) -> int:
        return len(self._alerts)
