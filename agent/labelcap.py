"""Label values cut to `labels.max_value_length` before any sink sees them.

The series limit bounds how many label sets a metric holds, not how long each value is:
200 events with distinct 20,000-character `model_group`s made /metrics 706 MB. Every
string an event carries into a label (and into a rule's `by`, a span attribute, a
CloudWatch dimension) is cut here, once, at the middle of the pipeline, so no sink has to
care. A cut value ends with MARK (so it is visibly not the original) and is counted on
`gatewatch_label_values_truncated_total{field}`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

from agent.events import Event

MARK = "…"
# the Event fields that become label values somewhere (Prometheus, rules, CloudWatch, spans)
LABEL_FIELDS = ("model", "model_group", "requested_model", "deployment", "api_provider", "api_base", "call_type",
                "status_code", "error_class", "error_code", "normalized_error", "aws_account", "aws_region",
                "key_hash", "key_alias", "team", "team_alias", "user", "end_user", "user_email", "org_id",
                "org_alias", "client_ip", "user_agent", "route", "response_model")
# attrs a sink turns into a label (the alert type of a webhook, a fallback's target model, ...)
LABEL_ATTRS = ("alert_type", "event_group", "fallback_model", "endpoint", "level", "fallback_from_status",
               "fallback_from_class", "fallback_from_provider")


class LabelCap:
    """Cuts over-long label values of events in place; `count(field)` is told of each cut."""

    def __init__(self, limit: int, count: Callable[[str], None] | None = None) -> None:
        self.limit = limit
        self._keep = limit - len(MARK)
        self._count = count or (lambda field: None)
        self._values = operator.attrgetter(*LABEL_FIELDS)

    def cut(self, value: str) -> str:
        return value[: self._keep] + MARK

    def apply(self, event: Event) -> None:
        limit = self.limit
        # hot path: one C-level pass over the lengths; the slow path only for an event that has a long value
        if max(map(len, self._values(event))) > limit:
            for name in LABEL_FIELDS:
                value = getattr(event, name)
                if len(value) > limit:
                    setattr(event, name, self.cut(value))
                    self._count(name)
        tags = event.tags
        if tags and max(map(len, tags)) > limit:
            event.tags = tuple(self.cut(t) if len(t) > limit else t for t in tags)
            self._count("tags")
        attrs = event.attrs
        if attrs:
            for name in LABEL_ATTRS:
                value = attrs.get(name)
                if isinstance(value, str) and len(value) > limit:
                    attrs[name] = self.cut(value)
                    self._count(name)
