"""The default alert receiver: alerts go to the log (no channel configured)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from agent.alert import Alert

log = logging.getLogger("gatewatch.alerts")


class LogReceiver:
    """Logs each firing alert once and each resolve once (evaluations re-send firing alerts)."""

    def __init__(self) -> None:
        self._firing: set[str] = set()

    def receive(self, alerts: Sequence[Alert]) -> None:
        for alert in alerts:
            fp = alert.fingerprint
            if alert.state == "firing" and fp not in self._firing:
                self._firing.add(fp)
                log.warning("FIRING %s %s value=%s %s", alert.name, alert.labels, alert.value,
                            alert.annotations.get("summary", ""))
            elif alert.state == "resolved" and fp in self._firing:
                self._firing.discard(fp)
                log.warning("RESOLVED %s %s", alert.name, alert.labels)
