"""The proxy's own use of each Bedrock quota: what completed, and what Bedrock reserved.

Two views from the callback events, in real time:
- completed: input + output x burndown of successful calls (what Bedrock settles at the end);
- reserved: input + max_tokens x burndown of every call Bedrock accepted, with the model's
  maximum output standing in for an unset max_tokens (Bedrock reserves that much at the
  start of the request, the most common cause of surprise throttling).

Use is kept in per-minute and per-hour buckets keyed by account|region|model|inference|view.
With a shared state backend (Redis) the buckets are counters there, so every task of the
service adds to the same totals, as Bedrock's quota does; otherwise they stay in memory.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.events import Event, Kind
from agent.quotas.mapping import ModelInfo
from agent.state.base import StateUnavailable

log = logging.getLogger(__name__)

VIEWS = ("completed", "reserved", "account")
MINUTE_TTL = 180.0
HOUR_TTL = 26 * 3600.0


@dataclass(frozen=True, slots=True)
class QuotaTarget:
    """What a deployment's calls count against: one account/region/model/inference."""

    key: str  # account|region|model|inference
    info: ModelInfo | None


def minute_bucket(t: float) -> str:
    return f"quota:m:{int(t // 60)}"


def hour_bucket(t: float) -> str:
    return f"quota:h:{int(t // 3600)}"


class UsageRecorder:
    """A pipeline sink: callback events of Bedrock deployments -> use buckets (no I/O in handle)."""

    name = "quota-usage"

    def __init__(self, state: Any = None) -> None:
        self.targets: dict[str, QuotaTarget] = {}  # deployment id -> target, rebuilt by the quota service
        self.shared = state if state is not None and hasattr(state, "enqueue") else None
        self.local: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.without_max_tokens: dict[str, float] = defaultdict(float)  # target key -> count

    def handle(self, events: Sequence[Event]) -> None:
        targets = self.targets
        if not targets:
            return
        for e in events:
            if e.kind != Kind.REQUEST or e.health_check:
                continue
            target = targets.get(e.deployment)
            if target is None or e.is_no_deployments:
                continue
            self.observe(e, target)

    def observe(self, e: Event, target: QuotaTarget) -> None:
        info = target.info
        burndown = info.output_burndown if info else 1.0
        throttled = e.rate_limited
        if e.status == "success":
            self._add(e.time, target.key, "completed", e.input_tokens + e.output_tokens * burndown, 1.0)
        if throttled:
            return  # refused at the door: nothing was reserved
        limit = e.max_tokens
        if limit is None:
            self.without_max_tokens[target.key] += 1
            limit = info.max_output_tokens if info and info.max_output_tokens else e.output_tokens
        start = e.start_time if e.start_time is not None else e.time
        self._add(start, target.key, "reserved", e.input_tokens + limit * burndown, 1.0)

    def _add(self, t: float, key: str, view: str, tokens: float, requests: float) -> None:
        amounts = {f"{key}|{view}|t": tokens, f"{key}|{view}|r": requests}
        for bucket, ttl in ((minute_bucket(t), MINUTE_TTL), (hour_bucket(t), HOUR_TTL)):
            if self.shared is not None:
                self.shared.enqueue(bucket, amounts, ttl)
            else:
                local = self.local[bucket]
                for name, amount in amounts.items():
                    local[name] += amount

    def forget(self, now: float) -> None:
        """Drop local buckets older than a day (the shared ones expire by TTL)."""
        keep = {minute_bucket(now), minute_bucket(now - 60)} | {hour_bucket(now - h * 3600) for h in range(25)}
        for bucket in [b for b in self.local if b not in keep]:
            del self.local[bucket]

    async def read(self, bucket: str) -> dict[str, float]:
        if self.shared is not None:
            try:
                return await self.shared.get_counters(bucket)
            except StateUnavailable:
                return {}
        return dict(self.local.get(bucket, {}))

    async def per_minute(self, now: float) -> dict[str, tuple[float, float]]:
        """key|view -> (tokens, requests) over the last 60 s: this minute plus the unexpired share of the last."""
        current, previous = await self.read(minute_bucket(now)), await self.read(minute_bucket(now - 60))
        share = 1.0 - (now % 60) / 60.0
        out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for counters, weight in ((current, 1.0), (previous, share)):
            for name, value in counters.items():
                base, _, what = name.rpartition("|")
                out[base][0 if what == "t" else 1] += value * weight
        return {k: (v[0], v[1]) for k, v in out.items()}

    async def per_day(self, now: float) -> dict[str, float]:
        """key|view -> tokens over the last 24 hourly buckets."""
        out: dict[str, float] = defaultdict(float)
        for h in range(24):
            for name, value in (await self.read(hour_bucket(now - h * 3600))).items():
                base, _, what = name.rpartition("|")
                if what == "t":
                    out[base] += value
        return dict(out)

    async def start(self) -> None:
        return None

    async def stop(self, deadline: float) -> None:
        return None
