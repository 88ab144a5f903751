"""Output encoding of notifications: what comes from payloads is text, never markup.

Label values (and annotations rendered from them) come from LiteLLM payloads, so a client
controls them: a `model_group` of `<!channel>` pinged a Slack channel, and a deployment
named `<https://evil.example/login|Click to re-auth>` rendered as a link. Templates stay
about content (agent/alerts/templates); this layer makes a copy of the notification whose
user-controlled strings are escaped for the one place they land:

- Slack fields and header (mrkdwn, inserted as is): `&`, `<`, `>` as HTML entities, which
  is all Slack's own formatting guide asks for; mentions and links need `<`.
- Slack message body (CommonMark that apprise converts to mrkdwn): `<`, `>`, `[`, `]`
  backslash-escaped; apprise turns `\\<` into `&lt;` and keeps `\\[x\\](url)` as text.
- Discord embeds and Teams cards (Markdown as is): `\\`, `[`, `]`, `<`, `>`, `(`, `)`
  backslash-escaped, so no masked link and no `<@id>` mention; `@everyone` / `@here`
  broken with a zero-width space (Discord's payload also sends `allowed_mentions` none).

A URL annotation (runbook) keeps working: its characters that could close a link
(`<>|()[]"` and spaces) are percent-encoded instead. Non-finite values become None, so
every body is valid JSON (`Infinity` is not).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from urllib.parse import quote

from agent.alerts.notification import AlertItem, Notification
from agent.parse.safejson import json_safe

URL_KEYS = ("runbook_url", "runbook", "generator_url", "dashboard", "dashboard_url")
_URL_SAFE = ":/?#@!$&'*+,;=%-._~"

_SLACK_BODY = re.compile(r"([<>\[\]])")
_MARKDOWN = re.compile(r"([\\\[\]<>()])")
_MENTION = re.compile(r"@(everyone|here)", re.IGNORECASE)


def slack_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(text: str) -> str:
    return _SLACK_BODY.sub(r"\\\1", text)


def markdown_text(text: str) -> str:
    return _MENTION.sub("@\u200b\\1", _MARKDOWN.sub(r"\\\1", text))


def safe_url(text: str) -> str:
    return quote(text, safe=_URL_SAFE)


def _is_url(key: str, value: str) -> bool:
    return key in URL_KEYS and value.startswith(("https://", "http://")) and not any(c.isspace() for c in value)


def finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def escaped(note: Notification, escape: Callable[[str], str] | None) -> Notification:
    """`note` with user-controlled strings escaped by `escape` (None: values made finite only)."""

    def strings(values: dict[str, str]) -> dict[str, str]:
        if escape is None:
            return dict(values)
        return {k: safe_url(v) if _is_url(k, v) else escape(v) if isinstance(v, str) else v
                for k, v in values.items()}

    alerts = [dataclasses.replace(a, labels=strings(a.labels), annotations=strings(a.annotations),
                                  value=finite(a.value)) for a in note.alerts]
    return dataclasses.replace(note, group_labels=strings(note.group_labels),
                               common_labels=strings(note.common_labels),
                               common_annotations=strings(note.common_annotations), alerts=alerts)


# channel -> (escape for template fields and title, escape for the message body)
CHANNEL_ESCAPES: dict[str, tuple[Callable[[str], str], Callable[[str], str]]] = {
    "slack": (slack_text, slack_body),
    "discord": (markdown_text, markdown_text),
    "workflows": (markdown_text, markdown_text),
}


def for_channel(note: Notification, channel: str) -> tuple[Notification, Notification]:
    """(note for the template fields and title, note for the body) of one channel."""
    fields, body = CHANNEL_ESCAPES.get(channel, (None, None))
    return escaped(note, fields), escaped(note, body)


__all__ = ["AlertItem", "escaped", "finite", "for_channel", "json_safe"]
