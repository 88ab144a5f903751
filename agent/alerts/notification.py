"""One notification: a group's alerts at one flush, addressed to one receiver.

This is what the outbox stores (as JSON) and what every channel template renders, so it
holds plain data only. Its `id` is a stable hash of what it says (receiver, group, which
alerts fire and which resolved, time bucket): the same notification retried after a
restart keeps its id, and receivers can drop duplicates by it (at-least-once delivery).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.alert import FACT_FIELDS, AlertFacts


@dataclass
class AlertItem(AlertFacts):
    status: str  # firing | resolved
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: float = 0.0
    ends_at: float | None = None
    value: float | None = None
    fingerprint: str = ""

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    def fired_for(self) -> float | None:
        """Seconds between firing and resolve (what a resolved message says)."""
        if self.ends_at is None or not self.starts_at:
            return None
        return max(0.0, self.ends_at - self.starts_at)

    def to_dict(self) -> dict[str, Any]:
        """The outbox's JSON: the item's own fields, then the shared facts (the order rows always had)."""
        data = asdict(self)
        return {**{k: v for k, v in data.items() if k not in FACT_FIELDS}, **{k: data[k] for k in FACT_FIELDS}}


@dataclass
class Notification:
    id: str
    receiver: str
    group_key: str
    status: str  # firing if any alert fires, else resolved
    group_labels: dict[str, str]
    common_labels: dict[str, str]
    common_annotations: dict[str, str]
    alerts: list[AlertItem]
    created_at: float
    external_url: str = ""
    truncated: int = 0  # alerts left out of a very large group
    dashboard_url: str = ""  # notify.dashboard_url: the base; messages add the locating labels

    @property
    def firing(self) -> list[AlertItem]:
        return [a for a in self.alerts if a.status == "firing"]

    @property
    def resolved(self) -> list[AlertItem]:
        return [a for a in self.alerts if a.status == "resolved"]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "alerts": [a.to_dict() for a in self.alerts]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notification:
        alerts = [AlertItem(**a) for a in data.get("alerts", [])]
        return cls(**{**data, "alerts": alerts})


def common(maps: list[dict[str, str]]) -> dict[str, str]:
    """Key/values shared by every map (Alertmanager's commonLabels / commonAnnotations)."""
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def content_key(receiver: str, group_key: str, firing: list[str], resolved: list[str]) -> str:
    """What a notification says, independent of when: the cross-task claim key."""
    digest = hashlib.sha256()
    for part in (receiver, group_key, ",".join(sorted(firing)), ",".join(sorted(resolved))):
        digest.update(part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def notification_id(key: str, created_at: float, bucket_seconds: float) -> str:
    """Stable across retries (stored with the row) and, within one bucket, across tasks."""
    bucket = int(created_at // max(bucket_seconds, 1.0))
    return hashlib.sha256(f"{key}:{bucket}".encode()).hexdigest()[:24]
