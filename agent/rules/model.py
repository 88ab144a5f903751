"""The rule types: a rule is a typed expression over the event stream, `signal` +
`aggregate` over a window `over`, grouped `by` labels, filtered `where`, and a threshold
(`above`/`below`), or a calendar `budget`; rules sit in groups, groups in a rule set.

Reading them from files (schema, `file:line` errors, values files) is schema.py's job.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.events import LABEL_NAMES
from agent.matchers import Matcher
from agent.rules import template

LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_OVER = 300.0


RULE_KEYS = ("alert", "signal", "aggregate", "over", "by", "where", "min_events", "above", "below", "for",
             "keep_firing_for", "labels", "annotations", "scope", "overrides", "budget", "forget_after",
             "keep_empty_labels", "disabled")


class RuleError(ValueError):
    """One problem in a rule or values file, located by file, line and key path."""

    def __init__(self, file: str, line: int, path: str, message: str) -> None:
        self.file, self.line, self.path, self.message = file, line, path, message
        where = f"{file}:{line}: " if line else f"{file}: "
        super().__init__(f"{where}{path + ': ' if path else ''}{message}")


class RuleSetError(ValueError):
    """Every problem found while loading a set of rule files."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


# -- small value types ---------------------------------------------------------------


# event attrs some sources set (health poller: endpoint readiness / liveliness, the task it runs
# in, `starting` while the proxy was never seen up within litellm.start_grace)
# LiteLLM alert webhooks: `event` (WebhookEvent.event or the slack-format alert type), `event_group`,
# `max_budget`, `level`
# agent/quotas: quota, inference, view, quota_code, unmatched
EXTRA_LABELS = ("endpoint", "task", "starting", "event", "event_group", "max_budget", "level",
                "quota", "inference", "view", "quota_code", "unmatched")


def label_valid(name: str) -> bool:
    return (name in LABEL_NAMES or name in EXTRA_LABELS
            or (name.startswith("tag_") and len(name) > 4 and bool(LABEL_RE.match(name))))


def parse_rule_matcher(label: str, raw: Any) -> Matcher:
    """A rule file's matcher: `value` equal, `!value` not equal, `~regex` full match,
    `!~regex` no match, a list = any of; the shared `Matcher` routes and silences use too."""
    if isinstance(raw, list):
        if not raw:
            raise ValueError("expected a non-empty list of values")
        return Matcher.create_any_of(label, [scalar(v) for v in raw])
    text = scalar(raw)
    for prefix, op in (("!~", "!~"), ("~", "=~"), ("!", "!="), ("=", "=")):
        if text.startswith(prefix):
            body = text[len(prefix):]
            if op in ("=~", "!~"):
                try:
                    re.compile(body)
                except re.error as exc:
                    raise ValueError(f"invalid regular expression {body!r}: {exc}") from None
            return Matcher.create(label, body, is_regex=op in ("=~", "!~"), is_equal=op in ("=", "=~"))
    return Matcher.create(label, text)


def scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise ValueError(f"expected a string or number, got {type(value).__name__}")


@dataclass(frozen=True)
class Override:
    match: tuple[Matcher, ...]
    above: float | None = None
    below: float | None = None
    min_events: int | None = None

    def applies(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.match)


@dataclass(frozen=True)
class BudgetSpec:
    signal: str
    by: tuple[str, ...]
    where: tuple[Matcher, ...]
    period: str
    timezone: str
    limit: float | None
    limits: dict[str, float]
    thresholds: tuple[float, ...]
    forecast: bool
    forecast_min_elapsed: float

    def limit_for(self, key: tuple[str, ...]) -> float | None:
        if self.limits:
            joined = ",".join(key)
            if joined in self.limits:
                return self.limits[joined]
        return self.limit


@dataclass
class Rule:
    alert: str
    group: str
    file: str
    line: int
    index: int = 0  # occurrence of this alert name inside the group (names may repeat)
    signal: str = ""
    aggregate: str = ""
    quantile: float | None = None
    over: float = DEFAULT_OVER
    by: tuple[str, ...] = ()
    where: tuple[Matcher, ...] = ()
    min_events: int = 1
    above: float | None = None
    below: float | None = None
    for_: float = 0.0
    keep_firing_for: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, template.Template] = field(default_factory=dict)
    scope: str = "local"
    overrides: tuple[Override, ...] = ()
    budget: BudgetSpec | None = None
    forget_after: float = 86400.0
    keep_empty_labels: bool = False
    disabled: bool = False
    raw: dict[str, Any] = field(default_factory=dict)
    digest: str = ""

    @property
    def id(self) -> str:
        return f"{self.group}/{self.alert}" + (f"#{self.index}" if self.index else "")

    @property
    def threshold(self) -> float | None:
        return self.above if self.above is not None else self.below

    @property
    def key_labels(self) -> tuple[str, ...]:
        return self.budget.by if self.budget is not None else self.by

    def window_identity(self) -> str:
        """What the rule's window stores; equal identity = the window can be kept on reload."""
        if self.budget is not None:
            b = self.budget
            parts: Any = ["budget", b.signal, b.by, [m.describe() for m in b.where], b.period, b.timezone]
        else:
            thresholds = sorted({t for t in [self.threshold, *(o.above if o.above is not None else o.below
                                                               for o in self.overrides)] if t is not None})
            kind = "p" if self.quantile is not None else self.aggregate
            parts = [self.signal, kind, self.over, self.by, [m.describe() for m in self.where],
                     self.keep_empty_labels, thresholds if self.quantile is not None else [],
                     self.below is not None]
        return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


@dataclass
class Group:
    name: str
    interval: float
    rules: list[Rule]
    file: str
    line: int


@dataclass
class RuleSet:
    groups: list[Group] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def rules(self) -> Iterable[Rule]:
        for group in self.groups:
            yield from group.rules

    def __len__(self) -> int:
        return sum(len(g.rules) for g in self.groups)


# -- values files (threshold overrides without copying the rule file) ---------------


# -- rule files ---------------------------------------------------------------------


