"""Silences: matchers + a time window that mute matching alerts, persisted in the state backend.

Kept in memory for the router's per-flush check (no I/O on the hot path) and written
through to the state backend, so they survive a restart and, with the Redis backend,
are shared by every sidecar of the service. Shape and rules follow Alertmanager's API v2.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.configtypes import ConfigError, parse_duration
from agent.matchers import Matcher, MatcherError, parse_matcher_object
from agent.state.base import StateBackend

log = logging.getLogger(__name__)

PREFIX = "notify/silences/"
RETENTION = 5 * 86400.0  # expired silences stay listable this long (Alertmanager's default)


class SilenceError(ValueError):
    """A silence request is invalid; the message is safe to return to the client."""


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise SilenceError(f"{what}: expected an RFC 3339 time or epoch seconds")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise SilenceError(f"{what}: expected an RFC 3339 time like 2025-06-01T12:00:00Z, got {value!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    raise SilenceError(f"{what}: expected an RFC 3339 time or epoch seconds")


@dataclass
class Silence:
    id: str
    matchers: list[Matcher]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    updated_at: float

    def state(self, now: float) -> str:
        if now < self.starts_at:
            return "pending"
        if now >= self.ends_at:
            return "expired"
        return "active"

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        return self.starts_at <= now < self.ends_at and all(m.matches(labels) for m in self.matchers)

    def to_api(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [m.to_api() for m in self.matchers],
            "startsAt": iso(self.starts_at),
            "endsAt": iso(self.ends_at),
            "createdBy": self.created_by,
            "comment": self.comment,
            "updatedAt": iso(self.updated_at),
            "status": {"state": self.state(now)},
        }

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "matchers": [m.to_api() for m in self.matchers], "starts_at": self.starts_at,
                "ends_at": self.ends_at, "created_by": self.created_by, "comment": self.comment,
                "updated_at": self.updated_at}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Silence:
        return cls(id=data["id"], matchers=[parse_matcher_object(m) for m in data["matchers"]],
                   starts_at=float(data["starts_at"]), ends_at=float(data["ends_at"]),
                   created_by=str(data.get("created_by", "")), comment=str(data.get("comment", "")),
                   updated_at=float(data.get("updated_at", 0.0)))


def silence_from_request(body: Any, now: float) -> Silence:
    """Validate a POST body: {matchers, startsAt?, endsAt | duration, createdBy?, comment?, id?}."""
    if not isinstance(body, dict):
        raise SilenceError("expected a JSON object")
    raw = body.get("matchers")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise SilenceError("matchers: expected a non-empty list like [\"alertname=SlowDeployment\"]")
    try:
        matchers = [parse_matcher_object(m) for m in raw]
    except MatcherError as exc:
        raise SilenceError(f"matchers: {exc}") from None
    if all(m.matches({}) for m in matchers):
        raise SilenceError("matchers: at least one matcher must not match an empty label (it would silence "
                           "every alert)")
    starts = parse_time(body["startsAt"], "startsAt") if body.get("startsAt") is not None else now
    if body.get("endsAt") is not None:
        ends = parse_time(body["endsAt"], "endsAt")
    elif body.get("duration") is not None:
        try:
            ends = starts + parse_duration(body["duration"], "duration")
        except ConfigError as exc:
            raise SilenceError(str(exc)) from None
    else:
        raise SilenceError("endsAt or duration is required")
    if ends <= starts:
        raise SilenceError("endsAt must be after startsAt")
    if ends <= now:
        raise SilenceError("endsAt is in the past")
    created_by = body.get("createdBy") or "api"
    comment = body.get("comment") or ""
    if not isinstance(created_by, str) or not isinstance(comment, str):
        raise SilenceError("createdBy and comment must be strings")
    silence_id = body.get("id") or str(uuid.uuid4())
    if not isinstance(silence_id, str) or len(silence_id) > 64:
        raise SilenceError("id: expected a string")
    return Silence(silence_id, matchers, starts, ends, created_by[:200], comment[:2000], now)


class SilenceStore:
    def __init__(self, state: StateBackend, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.clock = clock
        self._silences: dict[str, Silence] = {}

    async def load(self) -> None:
        """(Re)read from the state backend: picks up silences other sidecars created."""
        records = await self.state.list_json(PREFIX)
        loaded: dict[str, Silence] = {}
        for key, record in records.items():
            try:
                silence = Silence.from_record(record)
            except (KeyError, TypeError, ValueError, MatcherError):
                log.warning("skipping unreadable silence record %s", key)
                continue
            loaded[silence.id] = silence
        self._silences = loaded

    async def add(self, silence: Silence) -> Silence:
        now = self.clock()
        await self.state.put_json(PREFIX + silence.id, silence.to_record(), ttl=self._ttl(silence, now))
        self._silences[silence.id] = silence
        return silence

    async def expire(self, silence_id: str) -> Silence | None:
        silence = self._silences.get(silence_id)
        if silence is None:
            return None
        now = self.clock()
        if silence.ends_at > now:
            silence.ends_at = max(now, silence.starts_at)
            silence.updated_at = now
            await self.state.put_json(PREFIX + silence.id, silence.to_record(), ttl=self._ttl(silence, now))
        return silence

    def get(self, silence_id: str) -> Silence | None:
        return self._silences.get(silence_id)

    def all(self) -> list[Silence]:
        return sorted(self._silences.values(), key=lambda s: (s.starts_at, s.id))

    def active_count(self, now: float | None = None) -> int:
        now = self.clock() if now is None else now
        return sum(1 for s in self._silences.values() if s.state(now) == "active")

    def silenced_by(self, labels: Mapping[str, str], now: float) -> list[str]:
        return [s.id for s in self._silences.values() if s.mutes(labels, now)]

    def prune(self, now: float) -> None:
        for sid in [sid for sid, s in self._silences.items() if s.ends_at + RETENTION < now]:
            del self._silences[sid]

    @staticmethod
    def _ttl(silence: Silence, now: float) -> float:
        return max(60.0, silence.ends_at - now + RETENTION)
