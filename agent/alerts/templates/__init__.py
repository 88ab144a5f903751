"""Message rendering shared by every channel: title, body, and the tokens the JSON templates use.

The channel layouts live next to this file as apprise templates (`slack.json` Block Kit,
`discord.json` embed, `workflows.json` Teams Adaptive Card): apprise fills `{{app_title}}`,
`{{app_body}}` and the tokens below, JSON-escaped. The body is CommonMark; apprise turns
it into Slack's mrkdwn itself. A group message lists its alerts (the most relevant
first, capped), and a resolved alert says how long it fired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent.alerts.notification import AlertItem, Notification
from agent.alerts.templates.webhook import dashboard_link
from agent.alerts.units import fmt_duration, with_unit

TEMPLATE_DIR = Path(__file__).resolve().parent
MAX_LISTED = 10  # alerts listed in a chat message; the rest are counted
MISSING = "—"
FIELD_LABELS = ("model_group", "deployment", "aws_account", "aws_region")

# severity -> (hex colour, Adaptive Card container style, Adaptive Card text colour, apprise notify type)
SEVERITY_LOOK = {
    "critical": ("#D0021B", "attention", "Attention", "failure"),
    "error": ("#D0021B", "attention", "Attention", "failure"),
    "page": ("#D0021B", "attention", "Attention", "failure"),
    "warning": ("#F5A623", "warning", "Warning", "warning"),
    "info": ("#4A90E2", "accent", "Accent", "info"),
}
RESOLVED_LOOK = ("#2EB67D", "good", "Good", "success")
DEFAULT_LOOK = SEVERITY_LOOK["warning"]


def template_path(channel: str) -> str:
    return str(TEMPLATE_DIR / f"{channel}.json")


def severity(note: Notification) -> str:
    values = {a.labels.get("severity", "") for a in note.firing} or {a.labels.get("severity", "") for a in note.alerts}
    for level in ("critical", "page", "error", "warning", "info"):
        if level in values:
            return level
    return next((v for v in values if v), "none")


def look(note: Notification) -> tuple[str, str, str, str]:
    if note.status == "resolved":
        return RESOLVED_LOOK
    return SEVERITY_LOOK.get(severity(note), DEFAULT_LOOK)


def fmt_value(value: float | None) -> str:
    if value is None:
        return MISSING
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 1000 or abs(value) < 0.001:
        return f"{value:.4g}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


def fmt_time(ts: float | None) -> str:
    if not ts:
        return "?"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def title(note: Notification) -> str:
    firing, resolved = len(note.firing), len(note.resolved)
    if firing and resolved:
        state = f"[FIRING:{firing}, RESOLVED:{resolved}]"
    elif firing:
        state = f"[FIRING:{firing}]"
    else:
        state = f"[RESOLVED:{resolved}]" if resolved > 1 else "[RESOLVED]"
    names = sorted({a.name for a in note.alerts if a.name})
    name = note.group_labels.get("alertname") or (names[0] if len(names) == 1 else f"{len(names)} alerts")
    extras = [v for k, v in sorted(note.group_labels.items(), key=_label_order)
              if k not in ("alertname", "severity") and v]
    return " · ".join([f"{state} {name}", *extras])[:150]


def summary(alert: AlertItem) -> str:
    return alert.annotations.get("summary") or alert.annotations.get("description") or ""


def _is_url(text: str) -> bool:
    return text.startswith(("https://", "http://")) and not any(c.isspace() for c in text.strip())


def runbook(alert: AlertItem) -> str:
    """The runbook link: `runbook_url`, or `runbook` when that is a URL (the default rules write steps)."""
    for key in ("runbook_url", "runbook"):
        value = alert.annotations.get(key, "").strip()
        if value and _is_url(value):
            return value
    return ""


def runbook_steps(annotations: dict[str, str]) -> str:
    """A `runbook` annotation that is text (steps to follow), shown in the message body."""
    value = annotations.get("runbook", "").strip()
    return "" if not value or _is_url(value) else value


def _label_order(item: tuple[str, str]) -> tuple[int, str]:
    """Where it broke first (group, deployment, account, region), then the rest by name."""
    key = item[0]
    return (FIELD_LABELS.index(key), key) if key in FIELD_LABELS else (len(FIELD_LABELS), key)


def resolved_text(alert: AlertItem) -> str:
    """What a resolve says (issue 18): how long the condition held, keep_firing_for apart, and
    whether it cleared or the rule just ran out of data (traffic stopped: not seen fixed)."""
    if alert.no_data:
        text = "resolved without data: nothing reached the rule, the condition was not seen to clear"
    else:
        text = "resolved"
    if alert.held_for is None:
        return f"{text} after {fmt_duration(alert.fired_for())}"
    if alert.window is not None:
        text += (f" · last occurrence {fmt_duration(alert.held_for)} after it began, then none for its "
                 f"{fmt_duration(alert.window)} window")
    else:
        text += f" · condition held {fmt_duration(alert.held_for)}"
    if alert.kept_for:
        text += f", then kept firing {fmt_duration(alert.kept_for)} (keep_firing_for)"
    return text


def _alert_lines(alert: AlertItem, note: Notification) -> list[str]:
    icon = "🔥" if alert.status == "firing" else ("❔" if alert.no_data else "✅")
    head = f"{icon} **{alert.name or 'alert'}**"
    if alert.status == "resolved":
        head += f" {resolved_text(alert)}"
    text = summary(alert)
    if text and text != note.common_annotations.get("summary"):
        head += f" — {'when it fired: ' if alert.status == 'resolved' else ''}{text}"
    details = [f"`{k}={v}`" for k, v in sorted(alert.labels.items(), key=_label_order)
               if k not in ("alertname", "severity") and note.common_labels.get(k) != v]
    if alert.status == "resolved":
        details.append(f"value now **{with_unit(alert.value, alert.unit)}**")
    elif alert.value is not None:
        details.append(f"value **{with_unit(alert.value, alert.unit)}**")
    if alert.task:
        details.append(f"task `{alert.task}`")
    if alert.status == "firing" and alert.starts_at:
        details.append(f"since {fmt_time(alert.starts_at)}")
    link = runbook(alert)
    if link and len({runbook(a) for a in note.alerts}) > 1:
        details.append(f"[runbook]({link})")
    return [head, " · ".join(details)] if details else [head]


def body(note: Notification, limit: int = MAX_LISTED) -> str:
    """CommonMark listing of the group's alerts (firing first)."""
    lines: list[str] = []
    shared = note.common_annotations.get("summary")
    if shared:
        # annotations are rendered while firing: on a resolve they say what it was, not what it is
        lines.append(shared if note.status == "firing" else f"When it fired: {shared}")
    description = note.common_annotations.get("description")
    if description and description != shared and note.status == "firing":
        lines.append(description)
    for alert in note.alerts[:limit]:
        lines.extend(_alert_lines(alert, note))
    hidden = len(note.alerts) - limit + note.truncated
    if hidden > 0:
        lines.append(f"… and {hidden} more")
    steps = runbook_steps(note.common_annotations)
    if not steps and note.firing:  # steps templated per alert (a task, a deployment): the first one's
        steps = runbook_steps(note.firing[0].annotations)
    if steps and note.status == "firing":
        lines.append(f"**Runbook**\n{steps}")
    dashboard = dashboard_link(note.dashboard_url, note.common_labels)
    if dashboard:
        lines.append(f"[Dashboard]({dashboard})")
    if note.external_url:
        lines.append(f"[Open in gatewatch]({note.external_url})")
    return "\n".join(lines)


def _field(note: Notification, label: str) -> str:
    if label in note.common_labels:
        return note.common_labels[label] or MISSING
    values = {value for a in note.alerts if (value := a.labels.get(label))}
    if not values:
        return MISSING
    return f"{len(values)} different" if len(values) > 1 else values.pop()


@dataclass(frozen=True)
class Rendered:
    title: str
    body: str
    notify_type: str  # apprise NotifyType value
    tokens: dict[str, str]


def render(note: Notification) -> Rendered:
    """Everything a channel template needs for this notification."""
    color, card_style, card_text, notify_type = look(note)
    books = {runbook(a) for a in note.alerts if runbook(a)}
    link = books.pop() if len(books) == 1 else ""
    first = note.alerts[0] if note.alerts else None
    value = with_unit(first.value, first.unit) if first is not None and len(note.alerts) == 1 else (
        "see below" if note.alerts else MISSING)
    tokens = {label: _field(note, label) for label in FIELD_LABELS}
    tokens.update({
        "severity": severity(note) if note.status == "firing" else f"resolved ({severity(note)})",
        "value": value,
        "status": note.status,
        "notification_id": note.id,
        "receiver": note.receiver,
        "severity_color": color,
        "severity_color_int": str(int(color.lstrip("#"), 16)),
        "card_style": card_style,
        "card_text_color": card_text,
        "runbook_url": link,
        "runbook_slack": f"<{link}|Runbook>" if link else "No runbook",
        "runbook_markdown": f"[Runbook]({link})" if link else "No runbook",
        "timestamp": datetime.fromtimestamp(note.created_at, UTC).isoformat(),
        "summary": note.common_annotations.get("summary", ""),
    })
    return Rendered(title(note), body(note), notify_type, tokens)
