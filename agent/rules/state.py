"""Alert lifecycle per rule, as Prometheus has it: inactive -> pending -> firing -> resolved.

- the condition holds for a key: pending (or firing at once when `for` is 0);
- it has held for `for`: firing;
- it stops holding: a pending alert goes back to inactive silently; a firing one stays
  firing for `keep_firing_for`, then resolves (sent once);
- restored alerts (after a restart or a reload that changed the rule's window) are held
  as they were until the fresh window has covered `over` once, so an empty window right
  after a restart does not resolve what is really still broken.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.alert import Alert

Key = tuple[str, ...]


@dataclass
class ActiveAlert:
    key: Key
    labels: dict[str, str]
    state: str  # pending | firing
    active_at: float
    value: float
    last_true: float
    fired_at: float | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)  # extra template variables (budget)
    rendered_for: Any = None  # the inputs the annotations were last rendered with
    no_data: bool = False  # set at resolve: nothing reached the rule's window (not seen fixed)
    last_seen: float | None = None  # set at resolve for occurrence rules: the last occurrence
    window: float | None = None  # ... and their window

    def to_json(self) -> dict[str, Any]:
        return {"key": list(self.key), "labels": self.labels, "state": self.state, "active_at": self.active_at,
                "value": self.value, "last_true": self.last_true, "fired_at": self.fired_at,
                "annotations": self.annotations}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ActiveAlert:
        return cls(key=tuple(str(k) for k in data["key"]), labels={str(k): str(v) for k, v in data["labels"].items()},
                   state=str(data["state"]), active_at=float(data["active_at"]), value=float(data["value"]),
                   last_true=float(data["last_true"]),
                   fired_at=float(data["fired_at"]) if data.get("fired_at") is not None else None,
                   annotations={str(k): str(v) for k, v in (data.get("annotations") or {}).items()})


@dataclass
class Transitions:
    firing: list[ActiveAlert] = field(default_factory=list)  # every firing alert (re-sent each evaluation)
    resolved: list[tuple[ActiveAlert, float]] = field(default_factory=list)  # resolved now (sent once)
    changed: bool = False  # any state change worth persisting


class AlertStates:
    """The active (pending/firing) alerts of one rule, keyed by the rule's label values."""

    def __init__(self, for_: float, keep_firing_for: float) -> None:
        self.for_ = for_
        self.keep_firing_for = keep_firing_for
        self.active: dict[Key, ActiveAlert] = {}
        self.hold_until = 0.0  # restored alerts are kept as they are until then

    def __len__(self) -> int:
        return len(self.active)

    def update(self, now: float, true: Mapping[Key, float], labels_for: Callable[[Key], dict[str, str]],
               context_for: Callable[[Key], dict[str, Any]] | None = None) -> Transitions:
        out = Transitions()
        active = self.active
        for key, value in true.items():
            alert = active.get(key)
            if alert is None:
                alert = ActiveAlert(key=key, labels=labels_for(key), state="pending", active_at=now, value=value,
                                    last_true=now)
                active[key] = alert
                out.changed = True
            alert.value = value
            alert.last_true = now
            if context_for is not None:
                alert.context = context_for(key)
            if alert.state == "pending" and now - alert.active_at >= self.for_:
                alert.state = "firing"
                alert.fired_at = now
                out.changed = True
        for key in [k for k in active if k not in true]:
            alert = active[key]
            if now < self.hold_until:
                continue
            if alert.state == "pending":
                del active[key]
                out.changed = True
            elif now - alert.last_true >= self.keep_firing_for:
                del active[key]
                out.resolved.append((alert, now))
                out.changed = True
        out.firing = [a for a in active.values() if a.state == "firing"]
        return out

    def relabel(self, labels_for: Callable[[Key], dict[str, str]]) -> list[ActiveAlert]:
        """Recompute labels after a reload; returns firing alerts whose labels changed (to resolve)."""
        gone = []
        for alert in self.active.values():
            labels = labels_for(alert.key)
            if labels != alert.labels:
                if alert.state == "firing":
                    gone.append(ActiveAlert(**{**alert.__dict__}))
                alert.labels = labels
                alert.state = "pending"
                alert.fired_at = None
        return gone


def to_alert(a: ActiveAlert, group: str, scope: str, resolved_at: float | None = None, unit: str = "",
             task: str = "") -> Alert:
    # no copies: the engine never mutates these dicts in place (it assigns new ones), and every
    # firing alert is re-sent at every evaluation, so this is on the evaluation's hot path
    alert = Alert(labels=a.labels, annotations=a.annotations,
                  state="resolved" if resolved_at is not None else a.state,  # type: ignore[arg-type]
                  value=a.value, active_at=a.active_at, fired_at=a.fired_at, resolved_at=resolved_at,
                  rule_group=group, scope=scope, unit=unit,  # type: ignore[arg-type]
                  task=task if scope == "local" else "")
    if resolved_at is not None:
        # the condition held from active_at until it was last true; keep_firing_for kept it after
        alert.held_for = max(0.0, a.last_true - a.active_at)
        alert.kept_for = max(0.0, resolved_at - a.last_true)
        alert.no_data = a.no_data
        if a.window is not None and a.last_seen is not None:
            # occurrences from active_at to the last one; then the window emptied, then keep_firing_for
            alert.window = a.window
            alert.held_for = max(0.0, a.last_seen - a.active_at)
            alert.kept_for = max(0.0, resolved_at - max(a.last_true, a.last_seen + a.window))
    return alert
