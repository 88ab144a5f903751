"""Alertmanager's webhook payload (version 4), so any Alertmanager webhook consumer works as is.

Two additions a strict v4 consumer ignores: `notificationId` (stable across retries,
for de-duplication; also sent as the `X-Gatewatch-Notification-Id` header) and each
alert's rule `value`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from agent.alerts.notification import Notification
from agent.alerts.units import with_unit

DASHBOARD_LABELS = ("model_group", "deployment", "aws_account", "aws_region")

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert


def dashboard_link(base: str, labels: dict[str, str]) -> str:
    """The dashboard with the alert's locating labels as Grafana variables (`var-<label>=<value>`)."""
    if not base:
        return ""
    query = urlencode([(f"var-{k}", labels[k]) for k in DASHBOARD_LABELS if labels.get(k)])
    return f"{base}{'&' if '?' in base else '?'}{query}" if query else base


def rfc3339(ts: float | None) -> str:
    if not ts:
        return ZERO_TIME
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def webhook_payload(note: Notification, max_alerts: int = 0) -> dict[str, Any]:
    alerts = note.alerts
    truncated = note.truncated
    if max_alerts and len(alerts) > max_alerts:
        truncated += len(alerts) - max_alerts
        alerts = alerts[:max_alerts]
    return {
        "version": "4",
        "groupKey": note.group_key,
        "truncatedAlerts": truncated,
        "status": note.status,
        "receiver": note.receiver,
        "groupLabels": note.group_labels,
        "commonLabels": note.common_labels,
        "commonAnnotations": note.common_annotations,
        "externalURL": note.external_url,
        "alerts": [
            {
                "status": a.status,
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at),
                "endsAt": rfc3339(a.ends_at) if a.status == "resolved" else ZERO_TIME,
                "generatorURL": a.annotations.get("generator_url", note.external_url),
                "fingerprint": a.fingerprint,
                "value": a.value,
                # gatewatch's additions (an Alertmanager consumer ignores them): the value as a
                # person reads it, and on resolve how long the condition held, how long
                # keep_firing_for kept it after, and whether it resolved without data
                "valueText": with_unit(a.value, a.unit),
                "unit": a.unit,
                "heldFor": a.held_for,
                "keptFiringFor": a.kept_for,
                "noData": a.no_data,
                "task": a.task,
                "dashboardURL": dashboard_link(note.dashboard_url, a.labels),
            }
            for a in alerts
        ],
        "notificationId": note.id,
    }
