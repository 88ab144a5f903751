"""The alert record, in the core: the rule engine makes it, delivery sends it, neither imports the other.

Mirrors what Prometheus sends to Alertmanager: every evaluation re-sends the alerts that
are firing (so a restarted or new receiver catches up) and, once, the ones that resolved.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Literal, Protocol

AlertState = Literal["pending", "firing", "resolved"]


def fingerprint(labels: Mapping[str, str]) -> str:
    """Stable id of an alert: its sorted labels (alertname included), like Alertmanager's."""
    digest = hashlib.sha256()
    for key in sorted(labels):
        digest.update(key.encode())
        digest.update(b"\xff")
        digest.update(str(labels[key]).encode())
        digest.update(b"\xff")
    return digest.hexdigest()[:16]


@dataclass(kw_only=True)
class AlertFacts:
    """What a notification needs to tell the truth (issue 18), shared by the alert record and
    by the notification's alert item (agent/alerts/notification.py), which copies it: the
    value's unit (agent/alerts/units.py); on resolve, how long the condition held and how long
    keep_firing_for kept it firing after, and whether it resolved because no data reached the
    rule (not seen fixed); the task whose own view a `scope: local` alert is. Keyword-only, so
    each record keeps its own fields first and positional."""

    unit: str = ""
    held_for: float | None = None
    kept_for: float | None = None
    no_data: bool = False
    task: str = ""
    # rules that count occurrences (a cooldown, a refusal): the condition holds until the window
    # `window` seconds long has none; held_for then spans the occurrences only
    window: float | None = None


FACT_FIELDS = tuple(f.name for f in fields(AlertFacts))


@dataclass
class Alert(AlertFacts):
    labels: dict[str, str]  # alertname, severity, and the rule's `by` labels
    annotations: dict[str, str] = field(default_factory=dict)
    state: AlertState = "firing"
    value: float | None = None
    active_at: float = 0.0  # when the condition first held (pending began)
    fired_at: float | None = None  # when it went firing
    resolved_at: float | None = None
    rule_group: str = ""
    scope: Literal["local", "global"] = "local"
    generator_url: str = ""  # where it came from (Prometheus's graph link), for the API v2 and the console

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)


class AlertReceiver(Protocol):
    """Where the rule engine hands alerts after each evaluation (the notify router)."""

    def receive(self, alerts: Sequence[Alert]) -> None:
        """Firing alerts (re-sent every evaluation) and alerts resolved in this evaluation.

        Must not block: delivery happens in the receiver's own tasks.
        """
