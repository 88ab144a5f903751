"""LiteLLM alert bodies -> Event.

Two shapes reach `POST /v1/litellm/alerts`: the structured WebhookEvent of
`alerting: ["webhook"]` (budget and spend: `event`, `spend`, `max_budget`, ...) and the
slack-format `{"text": ...}` body, which LiteLLM sends for every alert type
(`Alert type: \\`llm_exceptions\\``, outage_alerts, llm_too_slow, ...).
"""

from __future__ import annotations

import re
import time
from typing import Any

from agent.events import Event, Kind

_ALERT_TYPE_RE = re.compile(r"Alert type: `([^`]+)`")
_LEVEL_RE = re.compile(r"Level: `([^`]+)`")
_FIELD_RES = {
    "model_group": re.compile(r"(?:Request Model|Model Group|Model): `([^`]*)`"),
    "model": re.compile(r"\*Model Name:\* `([^`]*)`"),
    "api_base": re.compile(r"API Base:\*? `([^`]*)`"),
    "api_provider": re.compile(r"\*Provider:\* `([^`]*)`"),
    "key_alias": re.compile(r"Key Alias: `([^`]*)`"),
    "team_alias": re.compile(r"Team Alias: `([^`]*)`"),
}
_NUM_ALERTS_RE = re.compile(r"\[Num Alerts: (\d+)\]")


class AlertBodyError(ValueError):
    pass


def alert_to_event(body: Any, now: float | None = None) -> Event:
    now = time.time() if now is None else now
    if not isinstance(body, dict):
        raise AlertBodyError("expected a JSON object (WebhookEvent or {\"text\": ...})")
    if "event" in body and ("spend" in body or "event_group" in body):
        return _webhook_event(body, now)
    if isinstance(body.get("text"), str):
        return _slack_text(body["text"], now)
    raise AlertBodyError("unknown alert body: expected LiteLLM's WebhookEvent or a slack-format {\"text\": ...}")


def _webhook_event(body: dict[str, Any], now: float) -> Event:
    spend = body.get("spend")
    event = Event(
        kind=Kind.BUDGET,
        time=now,
        source="webhook",
        key_hash=str(body.get("token") or ""),
        key_alias=str(body.get("key_alias") or ""),
        team=str(body.get("team_id") or ""),
        team_alias=str(body.get("team_alias") or ""),
        user=str(body.get("user_id") or ""),
        end_user=str(body.get("customer_id") or ""),
        org_id=str(body.get("organization_id") or ""),
        value=float(spend) if isinstance(spend, (int, float)) else None,
        status="failure" if body.get("event") in ("budget_crossed", "projected_limit_exceeded") else "success",
    )
    event.attrs = {
        "format": "webhook_event",
        "alert_type": str(body.get("event") or ""),
        "event": str(body.get("event") or ""),
        "event_group": str(body.get("event_group") or ""),
        "max_budget": _money_label(body.get("max_budget")),
        "soft_budget": body.get("soft_budget"),
        "projected_spend": body.get("projected_spend"),
        "projected_exceeded_date": body.get("projected_exceeded_date"),
        "user_email": body.get("user_email"),
        "message": str(body.get("event_message") or "")[:1000],
    }
    return event


def _money_label(value: Any) -> str:
    """A budget as a stable label value: "10", "0.5"; "None" when LiteLLM sends none (as its metrics spell it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "None"
    return f"{float(value):g}"


def _slack_text(text: str, now: float) -> Event:
    match = _ALERT_TYPE_RE.search(text)
    alert_type = match.group(1) if match else "unknown"
    kind = Kind.BUDGET if "budget" in alert_type or "spend" in alert_type else Kind.PROXY_ERROR
    event = Event(kind=kind, time=now, source="webhook", status="failure")
    for name, regex in _FIELD_RES.items():
        found = regex.search(text)
        if found and found.group(1) not in ("", "None"):
            setattr(event, name, found.group(1))
    level = _LEVEL_RE.search(text)
    count = _NUM_ALERTS_RE.search(text)
    event.attrs = {
        "format": "slack",
        "alert_type": alert_type,
        "event": alert_type,
        "level": level.group(1) if level else "",
        "num_alerts": int(count.group(1)) if count else 1,
        "message": text[:1000],
    }
    event.value = float(event.attrs["num_alerts"])
    return event
