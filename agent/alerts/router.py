"""Alertmanager's dispatcher, in process: route tree, grouping, timing, de-dup, inhibition, silences.

`receive()` is what the rule engine calls after every evaluation (firing alerts re-sent
each time, resolved ones once); it only updates memory. `flush_due(now)` returns the
notifications whose group timer expired, decided exactly as Alertmanager decides
(group_wait before the first, group_interval between updates, repeat_interval for an
unchanged group, resolved alerts once). The service then claims, enqueues to the outbox
and calls `commit()`, so nothing is marked as notified before it is durably queued.
All timing takes `now` from the caller, so tests drive it with a fake clock.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.alert import Alert
from agent.alerts.config import InhibitRuleConfig, NotifyConfig, ReceiverConfig, RouteConfig
from agent.alerts.notification import AlertItem, Notification, common, content_key, notification_id
from agent.alerts.timeintervals import TimeIntervals
from agent.matchers import Matcher, matches_all, parse_matcher

DEFAULT_GROUP_WAIT = 30.0
DEFAULT_GROUP_INTERVAL = 300.0
DEFAULT_REPEAT_INTERVAL = 4 * 3600.0
MAX_ALERTS_PER_NOTIFICATION = 1000  # beyond this a notification says how many it left out (truncated)


@dataclass
class Route:
    id: str
    receiver: str
    matchers: list[Matcher]
    group_by: tuple[str, ...]
    group_all: bool  # group_by: ['...']
    group_wait: float
    group_interval: float
    repeat_interval: float
    continue_: bool = False
    mute: tuple[str, ...] = ()
    active: tuple[str, ...] = ()
    children: list[Route] = field(default_factory=list)

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes an alert ends at: deepest matching children, honouring `continue`."""
        if not matches_all(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.children:
            hits = child.match(labels)
            if hits:
                found.extend(hits)
                if not child.continue_:
                    break
        return found or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        if self.group_all:
            return dict(labels)
        return {k: labels[k] for k in self.group_by if labels.get(k)}

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


def compile_route(cfg: RouteConfig, parent: Route | None = None, route_id: str = "root") -> Route:
    matchers = [parse_matcher(m) for m in cfg.matchers]
    group_by = cfg.group_by if cfg.group_by is not None else (list(parent.group_by) if parent else [])
    group_all = "..." in group_by if cfg.group_by is not None else (parent.group_all if parent else False)

    def pick(value: float | None, inherited: float | None, default: float) -> float:
        if value is not None:
            return float(value)
        return inherited if inherited is not None else default

    route = Route(
        id=route_id + ("{" + ",".join(str(m) for m in matchers) + "}" if matchers else ""),
        receiver=cfg.receiver or (parent.receiver if parent else ""),
        matchers=matchers,
        group_by=tuple(sorted(k for k in group_by if k != "...")),
        group_all=group_all,
        group_wait=pick(cfg.group_wait, parent.group_wait if parent else None, DEFAULT_GROUP_WAIT),
        group_interval=pick(cfg.group_interval, parent.group_interval if parent else None, DEFAULT_GROUP_INTERVAL),
        repeat_interval=pick(cfg.repeat_interval, parent.repeat_interval if parent else None,
                             DEFAULT_REPEAT_INTERVAL),
        continue_=cfg.continue_,
        mute=tuple(cfg.mute_time_intervals),
        active=tuple(cfg.active_time_intervals),
    )
    route.children = [compile_route(c, route, f"{route.id}/{i}") for i, c in enumerate(cfg.routes)]
    return route


@dataclass
class InhibitRule:
    source: list[Matcher]
    target: list[Matcher]
    equal: tuple[str, ...]

    @classmethod
    def from_config(cls, cfg: InhibitRuleConfig) -> InhibitRule:
        return cls([parse_matcher(m) for m in cfg.source_matchers], [parse_matcher(m) for m in cfg.target_matchers],
                   tuple(cfg.equal))


@dataclass
class _Entry:
    alert: Alert
    last_seen: float


@dataclass
class AggregationGroup:
    key: str
    route: Route
    labels: dict[str, str]
    created: float
    next_flush: float
    alerts: dict[str, _Entry] = field(default_factory=dict)
    flushes: int = 0


@dataclass(frozen=True)
class NflogEntry:
    """What the last notification of a group said (Alertmanager's notification log)."""

    firing: frozenset[str]
    resolved: frozenset[str]
    at: float

    def to_json(self) -> dict:
        return {"firing": sorted(self.firing), "resolved": sorted(self.resolved), "at": self.at}

    @classmethod
    def from_json(cls, data: dict) -> NflogEntry:
        return cls(frozenset(data.get("firing", ())), frozenset(data.get("resolved", ())), float(data.get("at", 0)))


@dataclass
class Planned:
    """A flush decision: the notification to queue (None = nothing to send, just record)."""

    notification: Notification | None
    receiver: str
    group_key: str
    nflog_key: str
    firing: frozenset[str]
    resolved: frozenset[str]
    claim_key: str
    claim_ttl: float


def nflog_key(receiver: str, group_key: str) -> str:
    return hashlib.sha256(f"{receiver}\x00{group_key}".encode()).hexdigest()[:32]


class Router:
    def __init__(self, config: NotifyConfig, *, silenced_by: Callable[[Mapping[str, str], float], list[str]]
                 | None = None, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.silenced_by = silenced_by or (lambda labels, now: [])
        self.on_change: Callable[[], None] | None = None  # wakes the flush loop when a new group appears
        self._lock = threading.Lock()
        self.groups: dict[str, AggregationGroup] = {}
        self.nflog: dict[str, NflogEntry] = {}
        self._firing: dict[str, tuple[dict[str, str], float]] = {}  # inhibition sources
        self.configure(config)

    def configure(self, config: NotifyConfig) -> None:
        """(Re)build the route tree; groups of routes that still exist keep their state."""
        with self._lock:
            self.config = config
            self.receivers: dict[str, ReceiverConfig] = {r.name: r for r in config.receivers}
            self.root = compile_route(config.route or RouteConfig(receiver=None))
            self.inhibit_rules = [InhibitRule.from_config(r) for r in config.inhibit_rules]
            self.intervals = TimeIntervals(config.mute_time_intervals)
            self.resolve_timeout = float(config.resolve_timeout)
            routes = {r.id: r for r in self.root.walk()}
            for key in list(self.groups):
                group = self.groups[key]
                route = routes.get(group.route.id)
                if route is None or route.receiver not in self.receivers:
                    del self.groups[key]
                else:
                    group.route = route

    # -- input ------------------------------------------------------------------------
    def receive(self, alerts: Sequence[Alert]) -> None:
        """Take an evaluation's alerts; memory only (called on the event loop)."""
        now = self.clock()
        woke = False
        with self._lock:
            for alert in alerts:
                if alert.state not in ("firing", "resolved"):
                    continue
                labels = {str(k): str(v) for k, v in alert.labels.items()}
                fp = alert.fingerprint
                if alert.state == "firing":
                    self._firing[fp] = (labels, now)
                else:
                    self._firing.pop(fp, None)
                for route in self.root.match(labels):
                    if route.receiver not in self.receivers:
                        continue
                    glabels = route.group_labels(labels)
                    key = f"{route.id}:{json.dumps(glabels, sort_keys=True, separators=(',', ':'))}"
                    group = self.groups.get(key)
                    if group is None:
                        if alert.state == "resolved" and not self._was_notified(route.receiver, key, fp):
                            continue  # never told anyone it fired: nothing to resolve
                        group = AggregationGroup(key, route, glabels, now, now + route.group_wait)
                        self.groups[key] = group
                        woke = True
                    group.alerts[fp] = _Entry(alert, now)
        if woke and self.on_change is not None:
            self.on_change()

    def _was_notified(self, receiver: str, group_key: str, fp: str) -> bool:
        entry = self.nflog.get(nflog_key(receiver, group_key))
        return entry is not None and fp in entry.firing

    # -- timing -----------------------------------------------------------------------
    def next_due(self) -> float | None:
        with self._lock:
            return min((g.next_flush for g in self.groups.values()), default=None)

    def flush_due(self, now: float, everything: bool = False) -> list[Planned]:
        """Decide the notifications of every group whose timer expired (or all, at shutdown)."""
        planned: list[Planned] = []
        with self._lock:
            self._expire_stale(now)
            for key in list(self.groups):
                group = self.groups[key]
                if not everything and group.next_flush > now:
                    continue
                group.next_flush = now + group.route.group_interval
                group.flushes += 1
                plan = self._flush_group(group, now)
                if plan is not None:
                    planned.append(plan)
                if not group.alerts:
                    del self.groups[key]
        return planned

    def _expire_stale(self, now: float) -> None:
        """A firing alert the rule engine stopped re-sending resolves after resolve_timeout."""
        limit = now - self.resolve_timeout
        for fp in [fp for fp, (_, seen) in self._firing.items() if seen < limit]:
            del self._firing[fp]
        for group in self.groups.values():
            for entry in group.alerts.values():
                if entry.alert.state == "firing" and entry.last_seen < limit:
                    old = entry.alert
                    entry.alert = Alert(labels=old.labels, annotations=old.annotations, state="resolved",
                                        value=old.value, active_at=old.active_at, fired_at=old.fired_at,
                                        resolved_at=entry.last_seen + self.resolve_timeout,
                                        rule_group=old.rule_group, scope=old.scope)

    def _muted_by_time(self, route: Route, now: float) -> bool:
        if route.mute and self.intervals.active(route.mute, now):
            return True
        return bool(route.active) and not self.intervals.active(route.active, now)

    def _inhibited(self, labels: Mapping[str, str], fp: str) -> bool:
        return bool(self._inhibitors(labels, fp, first=True))

    def _inhibitors(self, labels: Mapping[str, str], fp: str, first: bool = False) -> list[str]:
        found: list[str] = []
        for rule in self.inhibit_rules:
            if not matches_all(rule.target, labels):
                continue
            for source_fp, (source_labels, _) in self._firing.items():
                if source_fp == fp or not matches_all(rule.source, source_labels):
                    continue
                if all(source_labels.get(k, "") == labels.get(k, "") for k in rule.equal):
                    found.append(source_fp)
                    if first:
                        return found
        return found

    def inhibited_by(self, labels: Mapping[str, str], fp: str) -> list[str]:
        """Fingerprints of the firing alerts that inhibit this one (API v2 `inhibitedBy`)."""
        with self._lock:
            return sorted(set(self._inhibitors(labels, fp)))

    def receivers_for(self, labels: Mapping[str, str]) -> list[str]:
        """Receivers the route tree sends these labels to (API v2 `receivers`)."""
        with self._lock:
            return list(dict.fromkeys(r.receiver for r in self.root.match(labels) if r.receiver in self.receivers))

    def muted(self, labels: Mapping[str, str], fp: str, now: float) -> bool:
        return bool(self.silenced_by(labels, now)) or self._inhibited(labels, fp)

    def _flush_group(self, group: AggregationGroup, now: float) -> Planned | None:
        route = group.route
        receiver = self.receivers[route.receiver]
        firing = [(fp, e) for fp, e in group.alerts.items() if e.alert.state == "firing"]
        resolved = [(fp, e) for fp, e in group.alerts.items() if e.alert.state == "resolved"]
        if self._muted_by_time(route, now):
            self._drop_resolved(group, {fp for fp, _ in resolved})
            return None
        firing = [(fp, e) for fp, e in firing if not self.muted(e.alert.labels, fp, now)]
        firing_set = frozenset(fp for fp, _ in firing)
        resolved_set = frozenset(fp for fp, _ in resolved)
        nkey = nflog_key(receiver.name, group.key)
        entry = self.nflog.get(nkey)
        if not self._needs_update(entry, firing_set, resolved_set, receiver.send_resolved, route.repeat_interval, now):
            self._drop_resolved(group, resolved_set)
            return None
        notified = entry.firing if entry else frozenset()
        items = [self._item(e.alert, "firing", fp) for fp, e in firing]
        if receiver.send_resolved:
            items += [self._item(e.alert, "resolved", fp) for fp, e in resolved if fp in notified]
        ckey = content_key(receiver.name, group.key, sorted(firing_set), sorted(resolved_set & notified))
        claim_ttl = route.repeat_interval if firing_set else max(route.group_interval, 60.0)
        note = None
        if items:
            items.sort(key=lambda a: (a.status != "firing", a.starts_at, a.name))
            truncated = max(0, len(items) - MAX_ALERTS_PER_NOTIFICATION)
            items = items[:MAX_ALERTS_PER_NOTIFICATION]
            note = Notification(
                id=notification_id(ckey, now, route.group_interval),
                receiver=receiver.name,
                group_key=group.key,
                status="firing" if firing_set else "resolved",
                group_labels=dict(group.labels),
                common_labels=common([a.labels for a in items]),
                common_annotations=common([a.annotations for a in items]),
                alerts=items,
                created_at=now,
                external_url=self.config.external_url or "",
                dashboard_url=self.config.dashboard_url or "",
                truncated=truncated,
            )
        return Planned(note, receiver.name, group.key, nkey, firing_set, resolved_set, ckey, claim_ttl)

    @staticmethod
    def _needs_update(entry: NflogEntry | None, firing: frozenset[str], resolved: frozenset[str],
                      send_resolved: bool, repeat: float, now: float) -> bool:
        """Alertmanager's DedupStage.needsUpdate, counting only resolves of alerts people were told about.

        A silenced or inhibited alert is left out of `firing` but does not produce a
        "resolved" message: only a real resolve does.
        """
        if entry is None:
            return bool(firing)
        if not firing <= entry.firing:
            return True
        told_resolved = resolved & entry.firing
        if not firing:
            return bool(told_resolved)  # all clear: say so (or just clear the log without send_resolved)
        if send_resolved and told_resolved and not told_resolved <= entry.resolved:
            return True
        return entry.at <= now - repeat

    @staticmethod
    def _item(alert: Alert, status: str, fp: str) -> AlertItem:
        starts = alert.fired_at or alert.active_at or 0.0
        ends = (alert.resolved_at or None) if status == "resolved" else None
        item = AlertItem(status=status, labels=dict(alert.labels), annotations=dict(alert.annotations),
                         starts_at=starts, ends_at=ends, value=alert.value, fingerprint=fp, unit=alert.unit,
                         task=alert.task)
        if status == "resolved":
            item.held_for, item.kept_for, item.no_data = alert.held_for, alert.kept_for, alert.no_data
            item.window = alert.window
        return item

    def _drop_resolved(self, group: AggregationGroup, fps: frozenset[str] | set[str]) -> None:
        for fp in fps:
            entry = group.alerts.get(fp)
            if entry is not None and entry.alert.state == "resolved":
                del group.alerts[fp]

    def commit(self, plan: Planned, now: float | None = None) -> NflogEntry:
        """The plan's notification is durably queued (or another task sent it): record and clean up."""
        now = self.clock() if now is None else now
        entry = NflogEntry(plan.firing, plan.resolved, now)
        with self._lock:
            self.nflog[plan.nflog_key] = entry
            group = self.groups.get(plan.group_key)
            if group is not None:
                self._drop_resolved(group, plan.resolved)
                if not group.alerts:
                    del self.groups[plan.group_key]
        return entry

    def prune_nflog(self, older_than: float) -> int:
        """Forget log entries nobody refreshed since `older_than` (bounded memory)."""
        with self._lock:
            stale = [k for k, e in self.nflog.items() if e.at < older_than]
            for key in stale:
                del self.nflog[key]
            return len(stale)

    def load_nflog(self, entries: Mapping[str, NflogEntry]) -> None:
        with self._lock:
            for key, entry in entries.items():
                current = self.nflog.get(key)
                if current is None or current.at < entry.at:
                    self.nflog[key] = entry

    # -- views ------------------------------------------------------------------------
    def snapshot(self, now: float | None = None) -> list[dict]:
        """Current groups for GET /api/v1/alerts/groups."""
        now = self.clock() if now is None else now
        with self._lock:
            out = []
            for group in self.groups.values():
                out.append({
                    "receiver": group.route.receiver,
                    "route": group.route.id,
                    "labels": group.labels,
                    "next_flush_in": round(max(0.0, group.next_flush - now), 3),
                    "alerts": [{"labels": e.alert.labels, "state": e.alert.state, "value": e.alert.value,
                                "fingerprint": fp,
                                "silenced_by": self.silenced_by(e.alert.labels, now),
                                "inhibited": self._inhibited(e.alert.labels, fp)}
                               for fp, e in group.alerts.items()],
                })
            return out
