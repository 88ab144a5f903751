"""Per-deployment numbers of the last hour for the console's Deployments page.

The rule windows hold only what each rule asks for, and Prometheus counters have no
time axis, so this sink keeps its own small window: sixty one-minute buckets per
deployment (requests, errors, 429s, a latency histogram), the latest health, cooldown
and provider rate-limit headers, and today's spend. Buckets are keyed by arrival time,
not the payload's timestamps, so a sidecar whose proxy clock drifts still shows "now".
Memory is bounded by `max_deployments` (new deployments past it are counted, not kept).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.events import Event, Kind
from agent.rules.signals import SECONDS_BOUNDS

if TYPE_CHECKING:
    from agent.enrich import Catalog

MINUTES = 60
STATE_NAMES = {0: "healthy", 1: "partial outage", 2: "complete outage"}


@dataclass
class _Minute:
    minute: int = -1
    requests: int = 0
    errors: int = 0
    rate_limited: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(SECONDS_BOUNDS) + 1))

    def reset(self, minute: int) -> None:
        self.minute = minute
        self.requests = self.errors = self.rate_limited = 0
        self.latency = [0] * (len(SECONDS_BOUNDS) + 1)


@dataclass
class _Deployment:
    id: str
    model_group: str = ""
    model: str = ""
    api_provider: str = ""
    aws_account: str = ""
    aws_region: str = ""
    minutes: list[_Minute] = field(default_factory=lambda: [_Minute() for _ in range(MINUTES)])
    state: float | None = None
    state_at: float | None = None
    cooldown_until: float | None = None
    cooldown_reason: str = ""
    remaining_requests: float | None = None
    limit_requests: float | None = None
    remaining_tokens: float | None = None
    limit_tokens: float | None = None
    spend_day: str = ""
    spend: float = 0.0
    last_seen: float | None = None


def _percentile(counts: list[int], q: float) -> float | None:
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return SECONDS_BOUNDS[i] if i < len(SECONDS_BOUNDS) else SECONDS_BOUNDS[-1]
    return SECONDS_BOUNDS[-1]


class DeploymentStats:
    """A `Sink`: cheap per-event updates, read by the console's JSON view."""

    name = "console-deployments"

    def __init__(self, catalog: Catalog | None = None, clock: Callable[[], float] = time.time,
                 max_deployments: int = 2000) -> None:
        self.catalog = catalog
        self.clock = clock
        self.max_deployments = max_deployments
        self.dropped = 0
        self._by_id: dict[str, _Deployment] = {}
        self._day_hour = -1
        self._day_name = ""

    async def start(self) -> None:
        return None

    async def stop(self, deadline: float) -> None:
        return None

    def handle(self, events: Sequence[Event]) -> None:
        now = self.clock()
        minute = int(now // 60)
        day = self._day(now)
        for event in events:
            kind = event.kind
            if kind not in (Kind.REQUEST, Kind.COOLDOWN, Kind.DEPLOYMENT_STATE) or event.health_check:
                continue
            dep = self._deployment(event)
            if dep is None:
                continue
            dep.last_seen = now
            if kind == Kind.REQUEST:
                self._request(dep, event, minute, day)
            elif kind == Kind.COOLDOWN:
                seconds = event.value if event.value is not None else 5.0
                dep.cooldown_until = now + seconds
                dep.cooldown_reason = f"{event.status_code} {event.error_class}".strip()
                dep.state, dep.state_at = 2.0, now
            elif event.value is not None:
                dep.state, dep.state_at = float(event.value), now

    def _deployment(self, event: Event) -> _Deployment | None:
        key = event.deployment  # requests refused before a deployment was picked belong to no row
        if not key:
            return None
        dep = self._by_id.get(key)
        if dep is None:
            if len(self._by_id) >= self.max_deployments:
                self.dropped += 1
                return None
            dep = self._by_id[key] = _Deployment(key)
        dep.model_group = event.model_group or dep.model_group
        dep.model = event.model or dep.model
        dep.api_provider = event.api_provider or dep.api_provider
        dep.aws_account = event.aws_account or dep.aws_account
        dep.aws_region = event.aws_region or dep.aws_region
        return dep

    def _day(self, now: float) -> str:
        """The UTC day of `now`, recomputed only when the hour changes (hot path)."""
        hour = int(now // 3600)
        if hour != self._day_hour:
            self._day_hour = hour
            self._day_name = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        return self._day_name

    @staticmethod
    def _request(dep: _Deployment, event: Event, minute: int, day: str) -> None:
        slot = dep.minutes[minute % MINUTES]
        if slot.minute != minute:
            slot.reset(minute)
        slot.requests += 1
        if event.status != "success":
            slot.errors += 1
        if event.rate_limited:
            slot.rate_limited += 1
        if event.status == "success" and event.latency is not None:
            slot.latency[bisect.bisect_left(SECONDS_BOUNDS, event.latency)] += 1
        if dep.spend_day != day:
            dep.spend_day, dep.spend = day, 0.0
        dep.spend += event.cost_usd or 0.0
        if event.remaining_requests is not None:
            dep.remaining_requests = event.remaining_requests
            dep.limit_requests = event.limit_requests
        if event.remaining_tokens is not None:
            dep.remaining_tokens = event.remaining_tokens
            dep.limit_tokens = event.limit_tokens

    # -- the view ---------------------------------------------------------------------------
    def snapshot(self, window_minutes: int = 5) -> list[dict[str, Any]]:
        """Model groups -> deployments, catalog first (so idle deployments show too)."""
        now = self.clock()
        current = int(now // 60)
        today = self._day(now)
        rows: dict[str, dict[str, Any]] = {}
        for entry in (self.catalog or ()):
            rows[entry.id] = {"id": entry.id, "model_group": entry.model_group, "model": entry.model,
                              "api_provider": entry.provider, "aws_account": entry.aws_account or "unknown",
                              "aws_region": entry.aws_region or "unknown", "rpm_limit": entry.rpm,
                              "tpm_limit": entry.tpm}
        for dep in list(self._by_id.values()):
            row = rows.setdefault(dep.id, {"id": dep.id, "model_group": dep.model_group, "model": dep.model,
                                           "api_provider": dep.api_provider, "aws_account": dep.aws_account,
                                           "aws_region": dep.aws_region, "rpm_limit": None, "tpm_limit": None})
            row.update(self._numbers(dep, now, current, window_minutes, today))
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in rows.values():
            row.setdefault("requests_per_second", 0.0)
            row.setdefault("sparkline", [0] * MINUTES)
            row.setdefault("state", "no data")
            row.setdefault("spend_today", 0.0)
            row["quota_headroom"] = _headroom(row)
            groups.setdefault(row["model_group"] or "(none)", []).append(row)
        return [{"model_group": name, "deployments": sorted(items, key=lambda r: (r["aws_account"], r["aws_region"],
                                                                                   r["id"]))}
                for name, items in sorted(groups.items())]

    def _numbers(self, dep: _Deployment, now: float, current: int, window: int, today: str) -> dict[str, Any]:
        recent = [m for m in dep.minutes if current - window < m.minute <= current]
        requests = sum(m.requests for m in recent)
        errors = sum(m.errors for m in recent)
        limited = sum(m.rate_limited for m in recent)
        latency = [sum(col) for col in zip(*(m.latency for m in recent), strict=True)] if recent else []
        spark = []
        for back in range(MINUTES - 1, -1, -1):
            slot = dep.minutes[(current - back) % MINUTES]
            spark.append(slot.requests if slot.minute == current - back else 0)
        cooling = dep.cooldown_until is not None and dep.cooldown_until > now
        if cooling:
            state = "cooldown"
        elif dep.state is not None:
            state = STATE_NAMES.get(int(dep.state), str(dep.state))
        else:
            # no health poll or cooldown seen: say what the traffic says, not "healthy"
            state = "serving" if requests and errors < requests else ("failing" if requests else "no data")
        return {
            "window_minutes": window,
            "requests": requests,
            "requests_per_second": round(requests / (window * 60.0), 4),
            "error_ratio": round(errors / requests, 4) if requests else None,
            "rate_limited_ratio": round(limited / requests, 4) if requests else None,
            "p95_latency_seconds": _percentile(latency, 0.95) if latency else None,
            "state": state,
            "cooldown_seconds_left": round(dep.cooldown_until - now, 1) if cooling and dep.cooldown_until else None,
            "cooldown_reason": dep.cooldown_reason if cooling else "",
            "remaining_requests": dep.remaining_requests, "limit_requests": dep.limit_requests,
            "remaining_tokens": dep.remaining_tokens, "limit_tokens": dep.limit_tokens,
            "spend_today": round(dep.spend, 6) if dep.spend_day == today else 0.0,
            "sparkline": spark,
            "last_seen": dep.last_seen,
        }


def _headroom(row: dict[str, Any]) -> float | None:
    """Share of the provider's request quota left, from its x-ratelimit headers, else from the rpm limit."""
    remaining, limit = row.get("remaining_requests"), row.get("limit_requests")
    if remaining is not None and limit:
        return round(max(0.0, min(1.0, remaining / limit)), 4)
    rpm = row.get("rpm_limit")
    if rpm:
        used = (row.get("requests_per_second") or 0.0) * 60.0
        return round(max(0.0, 1.0 - used / rpm), 4)
    return None
