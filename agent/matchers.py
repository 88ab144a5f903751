"""Alertmanager label matchers: `name="v"`, `name!="v"`, `name=~"re"`, `name!~"re"`.

One parser for routes, inhibit rules and silences, so a matcher an operator copies from
an Alertmanager config (or `amtool`) means the same thing here. Regexes are anchored and
a missing label matches as the empty string, as in Alertmanager.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_MATCHER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|==|=)\s*(.*?)\s*$", re.DOTALL)


class MatcherError(ValueError):
    """A matcher string or object could not be parsed; the message says why."""


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True
    _pattern: re.Pattern[str] | None = None

    @classmethod
    def create(cls, name: str, value: str, is_regex: bool = False, is_equal: bool = True) -> Matcher:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name or ""):
            raise MatcherError(f"invalid label name {name!r}")
        pattern = None
        if is_regex:
            try:
                pattern = re.compile(value)
            except re.error as exc:
                raise MatcherError(f"invalid regex for {name}: {exc}") from None
        return cls(name, value, is_regex, is_equal, pattern)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self._pattern is not None:
            hit = self._pattern.fullmatch(actual) is not None
        else:
            hit = actual == self.value
        return hit if self.is_equal else not hit

    @property
    def operator(self) -> str:
        if self.is_regex:
            return "=~" if self.is_equal else "!~"
        return "=" if self.is_equal else "!="

    def __str__(self) -> str:
        return f"{self.name}{self.operator}{json.dumps(self.value)}"

    def to_api(self) -> dict[str, Any]:
        """Alertmanager API v2 shape."""
        return {"name": self.name, "value": self.value, "isRegex": self.is_regex, "isEqual": self.is_equal}


def parse_matcher(text: str) -> Matcher:
    """Parse `name="value"` (quotes optional) with =, !=, =~ or !~."""
    if not isinstance(text, str):
        raise MatcherError(f"expected a matcher string like severity=\"critical\", got {text!r}")
    match = _MATCHER_RE.match(text)
    if not match:
        raise MatcherError(f"expected a matcher like severity=\"critical\" or alertname=~\"Slow.*\", got {text!r}")
    name, op, raw = match.groups()
    value = _unquote(raw)
    op = "=" if op == "==" else op
    return Matcher.create(name, value, is_regex=op in ("=~", "!~"), is_equal=op in ("=", "=~"))


def parse_matcher_object(obj: Any) -> Matcher:
    """An API matcher: a string, or Alertmanager's {name, value, isRegex, isEqual}."""
    if isinstance(obj, str):
        return parse_matcher(obj)
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not isinstance(obj.get("value"), str):
        raise MatcherError("expected a matcher string or {name, value, isRegex, isEqual}")
    return Matcher.create(obj["name"], obj["value"], bool(obj.get("isRegex", False)), bool(obj.get("isEqual", True)))


def parse_matchers(items: list[str] | str) -> list[Matcher]:
    """A list of matcher strings, or one `{a="b", c=~"d"}` selector string."""
    if isinstance(items, str):
        return [parse_matcher(part) for part in split_selector(items)]
    return [parse_matcher(item) for item in items]


def split_selector(text: str) -> list[str]:
    """Split `{a="b", c=~"x,y"}` on commas outside quotes."""
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for ch in body:
        if escaped:
            current.append(ch)
            escaped = False
            continue
        if ch == "\\" and quoted:
            current.append(ch)
            escaped = True
            continue
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current))
    return [p for p in (s.strip() for s in parts) if p]


def matches_all(matchers: list[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        if raw[0] == '"':
            try:
                value = json.loads(raw)
            except ValueError:
                raise MatcherError(f"bad quoted value {raw}") from None
            if isinstance(value, str):
                return value
        return raw[1:-1]
    return raw
