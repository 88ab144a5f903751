"""Label matchers: `name="v"`, `name!="v"`, `name=~"re"`, `name!~"re"`, and any of a list.

One `Matcher` for rule `where`s and overrides, routes, inhibit rules and silences, so a
rule's filter and a route's matcher are the same object with the same semantics. The
parser here reads Alertmanager's spelling (routes, inhibit rules, silences, the API), so
a matcher an operator copies from an Alertmanager config (or `amtool`) means the same
thing here; rule files keep their own spelling (agent/rules/model.py) and build the same
`Matcher`. Regexes are anchored and a missing label matches as the empty string, as in
Alertmanager.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MATCHER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|==|=)\s*(.*?)\s*$", re.DOTALL)


class MatcherError(ValueError):
    """A matcher string or object could not be parsed; the message says why."""


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher for routes, inhibitions, silences, the API v2 and rule `where`s.

    The Alertmanager fields (`name`, `value`, `is_regex`, `is_equal`) are the whole truth for
    routing and the API. Rules add one form Alertmanager spells as a regex: "any of these
    values" (`any_of`), kept as a set so a rule tests membership instead of running a regex;
    its `value` is the anchored alternation of the escaped values, so `matches`, `__str__`
    and `to_api` mean the same thing to Alertmanager and to `amtool`.
    """

    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True
    any_of: frozenset[str] | None = None
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def create(cls, name: str, value: str, is_regex: bool = False, is_equal: bool = True) -> Matcher:
        _check_name(name)
        pattern = None
        if is_regex:
            try:
                pattern = re.compile(value)
            except re.error as exc:
                raise MatcherError(f"invalid regex for {name}: {exc}") from None
        return cls(name, value, is_regex, is_equal, None, pattern)

    @classmethod
    def create_any_of(cls, name: str, values: Iterable[str]) -> Matcher:
        """`name` equal to one of `values` (a rule's list form); at least one value."""
        _check_name(name)
        members = frozenset(values)
        if not members:
            raise MatcherError(f"expected at least one value for {name}")
        value = "|".join(re.escape(v) for v in sorted(members))
        return cls(name, value, True, True, members, re.compile(value))

    @property
    def op(self) -> str:
        """The operator as rules know it: `=`, `!=`, `=~`, `!~` or `in` (any of `any_of`)."""
        if self.any_of is not None:
            return "in"
        return self.operator

    @property
    def operator(self) -> str:
        """The Alertmanager operator (`in` is a regex there)."""
        if self.is_regex:
            return "=~" if self.is_equal else "!~"
        return "=" if self.is_equal else "!="

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Alertmanager semantics: a missing label matches as the empty string."""
        return self.matches_value(labels.get(self.name, ""))

    def matches_value(self, actual: str) -> bool:
        """Test one label value (what a rule does per event)."""
        if self.any_of is not None:
            return actual in self.any_of
        if self.pattern is not None:
            hit = self.pattern.fullmatch(actual) is not None
        else:
            hit = actual == self.value
        return hit if self.is_equal else not hit

    def describe(self) -> str:
        """The rule-side spelling (`label='v'`, `label in ['a', 'b']`): API output, error
        messages and rule window identities, which are stored, so it must not change."""
        if self.any_of is not None:
            return f"{self.name} in {sorted(self.any_of)}"
        return f"{self.name}{self.operator}{self.value!r}"

    def __str__(self) -> str:
        return f"{self.name}{self.operator}{json.dumps(self.value)}"

    def to_api(self) -> dict[str, Any]:
        """Alertmanager API v2 shape."""
        return {"name": self.name, "value": self.value, "isRegex": self.is_regex, "isEqual": self.is_equal}


def _check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name or ""):
        raise MatcherError(f"invalid label name {name!r}")


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
