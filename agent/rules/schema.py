"""Rule files read: the schema, validated with `file:line` errors, and threshold values files.

A rule file has Prometheus' shape (groups -> rules with alert/for/keep_firing_for/labels/
annotations), but the condition is a typed expression over the event stream (the types
are in model.py). Everything is checked at load time; `gatewatch rules check` prints every
problem as `file:line: key.path: reason`.

Thresholds can be changed without copying the file: a values file maps alert names to
partial rules that are merged over the shipped ones, `overrides` give per-label thresholds
inside a rule, and `${ENV:-default}` works in any value.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.configtypes import ConfigError, interpolate, parse_duration
from agent.events import LABEL_NAMES
from agent.matchers import Matcher
from agent.rules import template
from agent.rules.model import (
    EXTRA_LABELS,
    LABEL_RE,
    RULE_KEYS,
    BudgetSpec,
    Group,
    Override,
    Rule,
    RuleError,
    RuleSet,
    RuleSetError,
    label_valid,
    parse_rule_matcher,
    scalar,
)
from agent.rules.signals import BUDGET_SIGNALS, SIGNALS, parse_quantile
from agent.rules.values import Values, deep_merge
from agent.rules.yamlines import Path, YamlError, format_path, line_of
from agent.rules.yamlines import load as load_yaml

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_LABELS = ("alertname",)
PERIODS = ("day", "week", "month")
MAX_OVER = 7 * 86400.0


BUDGET_KEYS = ("signal", "by", "where", "period", "timezone", "limit", "limits", "thresholds", "forecast",
               "forecast_min_elapsed")


GROUP_KEYS = ("name", "interval", "rules", "labels")


OVERRIDE_KEYS = ("match", "above", "below", "min_events")


class _Ctx:
    """Error collection for one file: turns a key path into `file:line`."""

    def __init__(self, file: str, lines: dict[Path, int]) -> None:
        self.file = file
        self.lines = lines
        self.origins: dict[Path, tuple[str, dict[Path, int], Path]] = {}  # values-file keys
        self.errors: list[RuleError] = []

    def error(self, path: Path, message: str) -> None:
        for prefix in sorted(self.origins, key=len, reverse=True):
            if path[: len(prefix)] == prefix:
                file, lines, base = self.origins[prefix]
                rel = base + path[len(prefix):]
                self.errors.append(RuleError(file, line_of(lines, rel), format_path(path),
                                             f"{message} (set by values file)"))
                return
        self.errors.append(RuleError(self.file, line_of(self.lines, path), format_path(path), message))


def parse_rule_file(text: str, file: str, values: Values | None = None, env: Mapping[str, str] | None = None,
                    default_interval: float = 15.0) -> tuple[list[Group], list[RuleError]]:
    """Parse and validate one rule file; returns the valid groups and every error found."""
    try:
        data, lines = load_yaml(text)
    except YamlError as exc:
        return [], [RuleError(file, exc.line, "", exc.message)]
    ctx = _Ctx(file, lines)
    if data is None:
        return [], []
    if not isinstance(data, dict) or "groups" not in data:
        ctx.error((), "a rule file is a mapping with a `groups:` list")
        return [], ctx.errors
    for key in data:
        if key != "groups":
            ctx.error((key,), "unknown key; expected groups")
    try:
        data = interpolate(data, env)
    except ConfigError as exc:
        ctx.errors.append(RuleError(file, 0, exc.key_path, exc.reason))
        return [], ctx.errors
    raw_groups = data.get("groups")
    if not isinstance(raw_groups, list):
        ctx.error(("groups",), "expected a list of groups")
        return [], ctx.errors
    groups: list[Group] = []
    for gi, raw_group in enumerate(raw_groups):
        group = _parse_group(ctx, ("groups", gi), raw_group, values, default_interval)
        if group is not None:
            groups.append(group)
    return groups, ctx.errors


def _parse_group(ctx: _Ctx, path: Path, raw: Any, values: Values | None, default_interval: float) -> Group | None:
    if not isinstance(raw, dict):
        ctx.error(path, "expected a mapping with name, interval, rules")
        return None
    ok = True
    for key in raw:
        if key not in GROUP_KEYS:
            ctx.error((*path, key), f"unknown key; expected one of: {', '.join(GROUP_KEYS)}")
            ok = False
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        ctx.error((*path, "name"), "every group needs a name")
        return None
    if values is not None and name in values.groups:
        gvals, glines, gfile = values.groups[name]
        values.used.add(name)
        raw = deep_merge(raw, gvals)
        for key in gvals:
            ctx.origins[(*path, key)] = (gfile, glines, (key,))
    interval = default_interval
    if raw.get("interval") is not None:
        interval = _duration(ctx, (*path, "interval"), raw["interval"]) or default_interval
        if interval < 0.05:
            ctx.error((*path, "interval"), "expected at least 50ms")
            ok = False
    group_labels = _labels(ctx, (*path, "labels"), raw.get("labels")) or {}
    raw_rules = raw.get("rules")
    if not isinstance(raw_rules, list):
        ctx.error((*path, "rules"), "expected a list of rules")
        return None
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for ri, raw_rule in enumerate(raw_rules):
        rule = _parse_rule(ctx, (*path, "rules", ri), raw_rule, name, values, group_labels)
        if rule is None:
            ok = False
            continue
        rule.index = seen.get(rule.alert, 0)
        seen[rule.alert] = rule.index + 1
        if rule.disabled:
            continue
        rules.append(rule)
    if not ok and not rules:
        return None
    return Group(name=name, interval=interval, rules=rules, file=ctx.file, line=line_of(ctx.lines, path))


_COMPOUND_RE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")


_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_rule_duration(value: Any, where: str = "") -> float:
    """Durations as in the config (15s, 5m, 1h) plus Prometheus-style compounds (1h30m, 2m30s)."""
    if isinstance(value, str) and _COMPOUND_RE.match(value.strip()):
        return sum(float(n) * _UNITS[u] for n, u in _PART_RE.findall(value.strip()))
    return float(parse_duration(value, where))


def _duration(ctx: _Ctx, path: Path, value: Any) -> float | None:
    try:
        return parse_rule_duration(value, format_path(path))
    except ConfigError as exc:
        ctx.error(path, exc.reason)
        return None


def _number(ctx: _Ctx, path: Path, value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        ctx.error(path, f"expected a number, got {value!r}")
        return None
    try:
        return float(value)
    except ValueError:
        ctx.error(path, f"expected a number, got {value!r}")
        return None


def _int(ctx: _Ctx, path: Path, value: Any, minimum: int = 0) -> int | None:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
        ctx.error(path, f"expected a whole number, got {value!r}")
        return None
    number = int(value)
    if number < minimum:
        ctx.error(path, f"expected at least {minimum}, got {number}")
        return None
    return number


def _bool(ctx: _Ctx, path: Path, value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    ctx.error(path, f"expected true or false, got {value!r}")
    return None


def _labels(ctx: _Ctx, path: Path, value: Any) -> dict[str, str] | None:
    if value is None:
        return {}
    if not isinstance(value, dict):
        ctx.error(path, "expected a mapping of label: value")
        return None
    out: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not LABEL_RE.match(key):
            ctx.error((*path, key), "label names are letters, digits and _ (not starting with a digit)")
            continue
        if key in RESERVED_LABELS:
            ctx.error((*path, key), f"{key} is set by gatewatch")
            continue
        try:
            out[key] = scalar(val)
        except ValueError as exc:
            ctx.error((*path, key), str(exc))
    return out


def _label_list(ctx: _Ctx, path: Path, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        ctx.error(path, "expected a list of label names")
        return None
    out = []
    for i, name in enumerate(value):
        if not isinstance(name, str) or not label_valid(name):
            ctx.error((*path, i), f"unknown label {name!r}; expected one of: "
                                  f"{', '.join(LABEL_NAMES + EXTRA_LABELS)} or tag_<name>")
            return None
        if name in out:
            ctx.error((*path, i), f"label {name!r} listed twice")
            return None
        out.append(name)
    return tuple(out)


def _where(ctx: _Ctx, path: Path, value: Any) -> tuple[Matcher, ...] | None:
    if value is None:
        return ()
    if not isinstance(value, dict):
        ctx.error(path, "expected a mapping of label: matcher (value, !value, ~regex, !~regex or a list)")
        return None
    out = []
    for label, raw in value.items():
        if not isinstance(label, str) or not label_valid(label):
            ctx.error((*path, label), f"unknown label {label!r}; expected one of: "
                                      f"{', '.join(LABEL_NAMES + EXTRA_LABELS)} or tag_<name>")
            return None
        try:
            out.append(parse_rule_matcher(label, raw))
        except ValueError as exc:
            ctx.error((*path, label), str(exc))
            return None
    return tuple(out)


def _digest(group: str, raw: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([group, raw], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _parse_rule(ctx: _Ctx, path: Path, raw: Any, group: str, values: Values | None,
                group_labels: dict[str, str]) -> Rule | None:
    if not isinstance(raw, dict):
        ctx.error(path, "expected a mapping with alert, signal (or budget), ...")
        return None
    alert = raw.get("alert")
    if not isinstance(alert, str) or not NAME_RE.match(alert):
        if "record" in raw:
            ctx.error(path, "recording rules are not supported: gatewatch rules are alerting rules")
        else:
            ctx.error((*path, "alert"), "every rule needs an `alert:` name (letters, digits, _)")
        return None
    if values is not None:
        for name in (f"{group}/{alert}", alert):
            if name in values.rules:
                vals, vlines, vfile = values.rules[name]
                values.used.add(name)
                raw = deep_merge(raw, vals)
                for key in vals:
                    ctx.origins[(*path, key)] = (vfile, vlines, (key,))
                break
    before = len(ctx.errors)
    for key in raw:
        if key not in RULE_KEYS:
            hint = " (use `for`)" if key == "for_" else ""
            ctx.error((*path, key), f"unknown key{hint}; expected one of: {', '.join(RULE_KEYS)}")
    rule = Rule(alert=alert, group=group, file=ctx.file, line=line_of(ctx.lines, path), raw=raw)
    rule.labels = {**group_labels, **(_labels(ctx, (*path, "labels"), raw.get("labels")) or {})}
    if raw.get("disabled") is not None:
        rule.disabled = bool(_bool(ctx, (*path, "disabled"), raw.get("disabled")))
    if raw.get("for") is not None:
        rule.for_ = _duration(ctx, (*path, "for"), raw["for"]) or 0.0
    if raw.get("keep_firing_for") is not None:
        rule.keep_firing_for = _duration(ctx, (*path, "keep_firing_for"), raw["keep_firing_for"]) or 0.0
    if raw.get("keep_empty_labels") is not None:
        rule.keep_empty_labels = bool(_bool(ctx, (*path, "keep_empty_labels"), raw["keep_empty_labels"]))
    if "budget" in raw:
        if "signal" in raw:
            ctx.error((*path, "signal"), "a rule has either `signal` or `budget`, not both")
        for key in ("aggregate", "over", "by", "where", "above", "below", "min_events", "overrides"):
            if key in raw:
                ctx.error((*path, key), "not used by a budget rule (put by/where inside `budget:`)")
        rule.budget = _parse_budget(ctx, (*path, "budget"), raw["budget"])
        rule.scope = "global"
    elif "signal" in raw:
        _parse_signal_rule(ctx, path, raw, rule)
    else:
        ctx.error(path, f"rule {alert!r} needs a `signal:` (one of: {', '.join(SIGNALS)}) or a `budget:`")
    if raw.get("scope") is not None:
        if raw["scope"] not in ("local", "global"):
            ctx.error((*path, "scope"), f"expected local or global, got {raw['scope']!r}")
        else:
            rule.scope = raw["scope"]
    if raw.get("forget_after") is not None:
        rule.forget_after = _duration(ctx, (*path, "forget_after"), raw["forget_after"]) or rule.forget_after
    _parse_annotations(ctx, (*path, "annotations"), raw.get("annotations"), rule)
    if len(ctx.errors) > before:
        return None
    rule.digest = _digest(group, raw)
    return rule


def _parse_signal_rule(ctx: _Ctx, path: Path, raw: dict[str, Any], rule: Rule) -> None:
    name = raw.get("signal")
    signal = SIGNALS.get(name) if isinstance(name, str) else None
    if signal is None:
        ctx.error((*path, "signal"), f"unknown signal {name!r}; expected one of: {', '.join(SIGNALS)}")
        return
    rule.signal = signal.name
    rule.scope = "global" if signal.quota else "local"
    aggregate = raw.get("aggregate", signal.default_aggregate)
    if not isinstance(aggregate, str):
        ctx.error((*path, "aggregate"), f"expected an aggregate name, got {aggregate!r}")
        return
    quantile = parse_quantile(aggregate)
    if aggregate.startswith("p") and quantile is None:
        ctx.error((*path, "aggregate"), f"bad percentile {aggregate!r}; expected p50, p90, p95, p99, p99.9 ...")
        return
    if not signal.allows("pNN" if quantile is not None else aggregate):
        allowed = [a for a in ("count", "sum", "avg", "ratio", "min", "max", "rate", "last", "absent", "consecutive")
                   if signal.allows(a)] + (["p50", "p90", "p95", "p99"] if signal.percentiles and not signal.derived
                                           else [])
        ctx.error((*path, "aggregate"),
                  f"aggregate {aggregate!r} does not apply to signal {signal.name}; expected one of: "
                  f"{', '.join(allowed)}")
        return
    rule.aggregate = aggregate
    rule.quantile = quantile
    if raw.get("over") is not None:
        over = _duration(ctx, (*path, "over"), raw["over"])
        if over is not None:
            if not 1.0 <= over <= MAX_OVER:
                ctx.error((*path, "over"), "expected a window between 1s and 7d")
            rule.over = over
    by = _label_list(ctx, (*path, "by"), raw.get("by"))
    rule.by = by or ()
    if signal.derived == "quota_utilization" and by is not None and "deployment" not in rule.by:
        ctx.error((*path, "by"), "quota_utilization needs `deployment` in `by` (limits are per deployment)")
    rule.where = _where(ctx, (*path, "where"), raw.get("where")) or ()
    if raw.get("min_events") is not None:
        rule.min_events = _int(ctx, (*path, "min_events"), raw["min_events"], 1) or 1
    for key in ("above", "below"):
        if raw.get(key) is not None:
            setattr(rule, key, _number(ctx, (*path, key), raw[key]))
    if aggregate == "absent":
        for key in ("above", "below", "min_events"):
            if key in raw:
                ctx.error((*path, key), "`absent` has no threshold: it fires when a key that had events "
                                        "has had none for `over`")
    elif len([k for k in ("above", "below") if raw.get(k) is not None]) != 1:
        ctx.error(path, f"rule {rule.alert!r} needs exactly one of `above:` or `below:`")
    if aggregate == "consecutive" and rule.below is not None:
        ctx.error((*path, "below"), "`consecutive` counts failures in a row: use `above:`")
    if raw.get("overrides") is not None:
        rule.overrides = _parse_overrides(ctx, (*path, "overrides"), raw["overrides"], rule)


def _parse_overrides(ctx: _Ctx, path: Path, value: Any, rule: Rule) -> tuple[Override, ...]:
    if not isinstance(value, list):
        ctx.error(path, "expected a list of {match: {label: matcher}, above|below|min_events}")
        return ()
    out = []
    for i, item in enumerate(value):
        ipath = (*path, i)
        if not isinstance(item, dict) or not isinstance(item.get("match"), dict):
            ctx.error(ipath, "expected {match: {label: matcher}, above|below|min_events}")
            continue
        for key in item:
            if key not in OVERRIDE_KEYS:
                ctx.error((*ipath, key), f"unknown key; expected one of: {', '.join(OVERRIDE_KEYS)}")
        match = _where(ctx, (*ipath, "match"), item["match"]) or ()
        for m in match:
            if m.name not in rule.by:
                ctx.error((*ipath, "match", m.name), f"overrides match on the rule's `by` labels "
                                                      f"({', '.join(rule.by) or 'none'}), not {m.name!r}")
        above = _number(ctx, (*ipath, "above"), item["above"]) if item.get("above") is not None else None
        below = _number(ctx, (*ipath, "below"), item["below"]) if item.get("below") is not None else None
        if (above is not None and rule.below is not None) or (below is not None and rule.above is not None):
            ctx.error(ipath, "an override keeps the rule's direction (above or below)")
        min_events = _int(ctx, (*ipath, "min_events"), item["min_events"], 1) if item.get("min_events") else None
        out.append(Override(match, above, below, min_events))
    return tuple(out)


def _parse_budget(ctx: _Ctx, path: Path, raw: Any) -> BudgetSpec | None:
    if not isinstance(raw, dict):
        ctx.error(path, "expected a mapping with signal, by, period, limit, ...")
        return None
    for key in raw:
        if key not in BUDGET_KEYS:
            ctx.error((*path, key), f"unknown key; expected one of: {', '.join(BUDGET_KEYS)}")
    signal = raw.get("signal", "cost_usd")
    if signal not in BUDGET_SIGNALS:
        ctx.error((*path, "signal"), f"expected one of: {', '.join(BUDGET_SIGNALS)}, got {signal!r}")
    by = _label_list(ctx, (*path, "by"), raw.get("by")) or ()
    where = _where(ctx, (*path, "where"), raw.get("where")) or ()
    period = raw.get("period", "month")
    if period not in PERIODS:
        ctx.error((*path, "period"), f"expected one of: {', '.join(PERIODS)}, got {period!r}")
    tz = raw.get("timezone", "UTC")
    try:
        ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError):
        ctx.error((*path, "timezone"), f"unknown time zone {tz!r}; expected an IANA name like UTC or Europe/Paris")
    limit = _number(ctx, (*path, "limit"), raw["limit"]) if raw.get("limit") is not None else None
    limits: dict[str, float] = {}
    raw_limits = raw.get("limits") or {}
    if not isinstance(raw_limits, dict):
        ctx.error((*path, "limits"), "expected a mapping of label value (values joined by ',') -> limit")
    else:
        for key, val in raw_limits.items():
            number = _number(ctx, (*path, "limits", key), val)
            if number is not None:
                limits[str(key)] = number
    if limit is None and not limits:
        ctx.error(path, "a budget needs a default `limit:` or per-key `limits:`")
    if (limit is not None and limit <= 0) or any(v <= 0 for v in limits.values()):
        ctx.error((*path, "limit"), "limits must be positive")
    raw_thresholds = raw.get("thresholds", [1.0])
    thresholds: list[float] = []
    if not isinstance(raw_thresholds, list) or not raw_thresholds:
        ctx.error((*path, "thresholds"), "expected a list of fractions of the limit, e.g. [0.5, 0.8, 1.0]")
    else:
        for i, t in enumerate(raw_thresholds):
            number = _number(ctx, (*path, "thresholds", i), t)
            if number is not None and not 0 < number <= 10:
                ctx.error((*path, "thresholds", i), "expected a fraction of the limit (0 < t <= 10)")
            elif number is not None:
                thresholds.append(number)
    forecast = _bool(ctx, (*path, "forecast"), raw["forecast"]) if raw.get("forecast") is not None else False
    min_elapsed = 0.1
    if raw.get("forecast_min_elapsed") is not None:
        number = _number(ctx, (*path, "forecast_min_elapsed"), raw["forecast_min_elapsed"])
        if number is not None and not 0 <= number < 1:
            ctx.error((*path, "forecast_min_elapsed"), "expected a fraction of the period between 0 and 1")
        elif number is not None:
            min_elapsed = number
    return BudgetSpec(signal=str(signal), by=by, where=where, period=str(period), timezone=str(tz), limit=limit,
                      limits=limits, thresholds=tuple(sorted(set(thresholds))), forecast=bool(forecast),
                      forecast_min_elapsed=min_elapsed)


def _parse_annotations(ctx: _Ctx, path: Path, value: Any, rule: Rule) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        ctx.error(path, "expected a mapping of name: template")
        return
    names = {"alertname", *rule.labels, *rule.key_labels}
    if rule.budget is not None:
        names.add("threshold")
    for key, text in value.items():
        if not isinstance(text, str):
            try:
                text = scalar(text)
            except ValueError as exc:
                ctx.error((*path, key), str(exc))
                continue
        problem = template.check(text, names, budget=rule.budget is not None)
        if problem is not None:
            ctx.error((*path, key), f"{problem} (labels available: {', '.join(sorted(names))})")
            continue
        rule.annotations[str(key)] = template.Template(text)


def build_rule_set(sources: Iterable[tuple[str, str]], values: Values | None = None,
                   env: Mapping[str, str] | None = None, default_interval: float = 15.0) -> RuleSet:
    """Parse several (file name, text) sources into one validated set; raises RuleSetError."""
    rule_set = RuleSet()
    errors: list[RuleError] = []
    seen_groups: dict[str, str] = {}
    for file, text in sources:
        groups, file_errors = parse_rule_file(text, file, values, env, default_interval)
        errors.extend(sorted(file_errors, key=lambda e: e.line))
        rule_set.files.append(file)
        for group in groups:
            if group.name in seen_groups:
                errors.append(RuleError(file, group.line, "name",
                                        f"group {group.name!r} is already defined in {seen_groups[group.name]}"))
                continue
            seen_groups[group.name] = f"{file}:{group.line}"
            rule_set.groups.append(group)
    if values is not None:
        errors.extend(values.unused())
    if errors:
        raise RuleSetError(errors)
    return rule_set
