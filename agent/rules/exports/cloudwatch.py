"""gatewatch rules -> CloudWatch alarms (PutMetricAlarm inputs, or a CloudFormation template).

Only rules whose signal maps onto the metrics the CloudWatch sink publishes become
alarms; everything else is reported as skipped with the reason, never approximated
silently. How a rule maps:

* counters (requests, errors, rate_limited, retries, cooldowns, tokens, cost) with
  count/sum/rate, and latency/TTFT with avg/min/max: one Metrics Insights alarm. `by`
  becomes GROUP BY, so every series is a contributor of the one alarm (deployments added
  later included); `where` on dimension labels becomes WHERE.
* percentiles (pNN) and ratios (error_ratio, rate_limited_ratio): Metrics Insights has
  neither, so these alarms watch concrete series: pinned by `where`, expanded from the
  deployment catalog (`deployments=`), or fleet-wide when `by` is empty (ratios) / an empty
  dimension set is published (percentiles).
* A deployment has one model group, account, region and provider, so when no published
  dimension set covers `by`, a set with Deployment stands in for it; a `where` on a label
  that set lacks becomes `Deployment IN (...)` from the catalog.
* `over` becomes the period (rounded up to whole minutes), `for` extra evaluation periods
  (CloudWatch has no sliding windows). `keep_firing_for`, `min_events` and `overrides`
  have no CloudWatch equivalent and are noted in the alarm description.

Rules are accepted as the rule model's objects (`agent.rules.model.Rule` in `Group`s) or as
plain dicts (`groups[].rules[]` of a rule file, e.g. `agent.rules.exports.prometheus.raw_groups`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.configtypes import ConfigError, parse_duration
from agent.rules.exports.skipped import Skipped
from agent.sinks.config import DEFAULT_DIMENSION_SETS, DIMENSION_LABELS, MISSING

LABEL_DIMENSIONS = {label: dim for dim, label in DIMENSION_LABELS.items()}
DEPLOYMENT_DETERMINES = frozenset({"ModelGroup", "AwsAccount", "AwsRegion", "Provider"})
MI_MAX_WINDOW = 3 * 3600  # Metrics Insights alarms evaluate at most the latest 3 hours
MAX_WINDOW = 86400  # EvaluationPeriods x Period of a standard-resolution alarm
DEFAULT_OVER = 300.0
_SAFE_VALUE_RE = re.compile(r"^[^'\"\\]*$")


@dataclass(frozen=True)
class AlarmMetric:
    metric: str  # the CloudWatch metric (numerator for ratios, first term for totals)
    kind: str  # counter | distribution | ratio | total
    scale: float = 1.0  # rule unit -> CloudWatch unit (seconds -> milliseconds)
    second: str = ""  # denominator (ratio) or second term (total)
    countable: bool = True  # `count` of this signal = Sum of its metric (events, not amounts)
    default_aggregate: str = "sum"


SIGNALS: dict[str, AlarmMetric] = {
    "requests": AlarmMetric("Requests", "counter", default_aggregate="count"),
    "errors": AlarmMetric("Errors", "counter", default_aggregate="count"),
    "rate_limited": AlarmMetric("RateLimited", "counter", default_aggregate="count"),
    "retries": AlarmMetric("Retries", "counter"),
    "cooldowns": AlarmMetric("Cooldowns", "counter", default_aggregate="count"),
    "tokens_input": AlarmMetric("InputTokens", "counter", countable=False),
    "tokens_output": AlarmMetric("OutputTokens", "counter", countable=False),
    "tokens_total": AlarmMetric("InputTokens", "total", second="OutputTokens", countable=False),
    "cost_usd": AlarmMetric("CostUSD", "counter", countable=False),
    "latency_seconds": AlarmMetric("Latency", "distribution", scale=1000.0, default_aggregate="p95"),
    "ttft_seconds": AlarmMetric("TTFT", "distribution", scale=1000.0, default_aggregate="p95"),
    "error_ratio": AlarmMetric("Errors", "ratio", second="Requests", default_aggregate="avg"),
    "rate_limited_ratio": AlarmMetric("RateLimited", "ratio", second="Requests", default_aggregate="avg"),
}
_MI_FUNCTIONS = {"sum": "SUM", "count": "SUM", "rate": "SUM", "avg": "AVG", "min": "MIN", "max": "MAX"}


@dataclass
class AlarmPlan:
    alarms: list[dict[str, Any]]
    skipped: list[Skipped]


class _Unmappable(Exception):
    pass


@dataclass(frozen=True)
class _Filter:
    """One `where` condition on a dimension: op is = != or in."""

    op: str
    values: tuple[str, ...]

    def __call__(self, value: str) -> bool:
        if self.op == "!=":
            return value != self.values[0]
        return value in self.values

    def insights(self, dim: str) -> str:
        if self.op == "in":
            return f"{dim} IN ({', '.join(repr_mi(v) for v in self.values)})"
        return f"{dim} {self.op} {repr_mi(self.values[0])}"


def repr_mi(value: str) -> str:
    if not _SAFE_VALUE_RE.match(value):
        raise _Unmappable(f"value {value!r} has quotes or backslashes")
    return f"'{value}'"


@dataclass
class _RuleView:
    """The parts of a rule the export reads, from either rule shape."""

    group: str
    alert: str
    signal: str = ""
    aggregate: str = ""
    over: float = DEFAULT_OVER
    by: tuple[str, ...] = ()
    where: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)  # (label, op, values)
    above: Any = None
    below: Any = None
    pending: float = 0.0
    keep_firing_for: float = 0.0
    min_events: int = 1
    overrides: bool = False
    budget: bool = False
    disabled: bool = False
    summary: str = ""


def _field(obj: Any, name: str, default: Any = None) -> Any:
    value = obj.get(name, default) if isinstance(obj, Mapping) else getattr(obj, name, default)
    return default if value is None else value


def _seconds(value: Any, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        return float(parse_duration(value))
    except ConfigError:
        raise _Unmappable(f"cannot read duration {value!r}") from None


def _where(raw: Any) -> list[tuple[str, str, tuple[str, ...]]]:
    """`where` as (label, op, values): dicts of matcher strings, or the model's Matchers."""
    if not raw:
        return []
    if isinstance(raw, Mapping):
        from agent.rules.model import parse_rule_matcher

        matchers = []
        for label, value in raw.items():
            try:
                matchers.append(parse_rule_matcher(str(label), value))
            except ValueError as exc:
                raise _Unmappable(f"`where` {label}: {exc}") from None
    else:
        matchers = list(raw)
    out = []
    for m in matchers:
        values = tuple(sorted(m.any_of)) if m.any_of is not None else (m.value,)
        out.append((m.name, m.op, values))
    return out


def _view(rule: Any, group: str) -> _RuleView:
    alert = str(_field(rule, "alert", "") or "")
    signal = str(_field(rule, "signal", "") or "")
    default = SIGNALS[signal].default_aggregate if signal in SIGNALS else ""
    pending = _field(rule, "for_", None) if not isinstance(rule, Mapping) else rule.get("for")
    annotations = _field(rule, "annotations", {}) or {}
    summary = _field(annotations, "summary", "") or _field(annotations, "description", "")
    return _RuleView(
        group=group, alert=alert, signal=signal,
        aggregate=str(_field(rule, "aggregate", "") or default),
        over=_seconds(_field(rule, "over", None), DEFAULT_OVER),
        by=tuple(str(b) for b in (_field(rule, "by", ()) or ())),
        where=_where(_field(rule, "where", None)),
        above=_field(rule, "above", None), below=_field(rule, "below", None),
        pending=_seconds(pending, 0.0),
        keep_firing_for=_seconds(_field(rule, "keep_firing_for", None), 0.0),
        min_events=int(_field(rule, "min_events", 1) or 1),
        overrides=bool(_field(rule, "overrides", ())),
        budget=_field(rule, "budget", None) is not None,
        disabled=bool(_field(rule, "disabled", False)),
        summary=str(getattr(summary, "source", summary) or ""),
    )


def _period(over: float) -> int:
    return max(60, math.ceil(over / 60.0) * 60)


def alarms_for_rules(groups: Iterable[Any], namespace: str = "LiteLLM",
                     dimension_sets: Sequence[Sequence[str]] | None = None, deployments: Iterable[Any] | None = None,
                     prefix: str = "gatewatch-", actions: Sequence[str] = ()) -> list[dict[str, Any]]:
    """PutMetricAlarm inputs for the rules that map onto the CloudWatch sink's metrics."""
    return plan_alarms(groups, namespace, dimension_sets, deployments, prefix, actions).alarms


def plan_alarms(groups: Iterable[Any], namespace: str = "LiteLLM",
                dimension_sets: Sequence[Sequence[str]] | None = None, deployments: Iterable[Any] | None = None,
                prefix: str = "gatewatch-", actions: Sequence[str] = ()) -> AlarmPlan:
    """Like `alarms_for_rules`, also returning the rules left out and why."""
    if isinstance(groups, Mapping):  # a whole rule file
        groups = groups.get("groups") or []
    groups = getattr(groups, "groups", groups)  # a RuleSet
    sets = [tuple(s) for s in (dimension_sets if dimension_sets is not None else DEFAULT_DIMENSION_SETS)]
    catalog = [_deployment_dims(d) for d in deployments] if deployments is not None else None
    plan = AlarmPlan([], [])
    names: set[str] = set()
    for group in groups:
        group_name = str(_field(group, "name", ""))
        for rule in _field(group, "rules", []) or []:
            try:
                view = _view(rule, group_name)
                if not view.alert:
                    continue
                alarms = _rule_alarms(view, namespace, sets, catalog, prefix, actions)
                for alarm in alarms:
                    if alarm["AlarmName"] in names:
                        raise _Unmappable(f"alarm name {alarm['AlarmName']!r} would be created twice")
                    names.add(alarm["AlarmName"])
                plan.alarms.extend(alarms)
            except _Unmappable as exc:
                plan.skipped.append(Skipped(group_name, str(_field(rule, "alert", "")), str(exc)))
    return plan


def _deployment_dims(dep: Any) -> dict[str, str]:
    """Dimension values a catalog deployment publishes under (as the sink writes them)."""
    values = {
        "ModelGroup": _field(dep, "model_group", ""),
        "Deployment": _field(dep, "id", ""),
        "AwsAccount": _field(dep, "aws_account", ""),
        "AwsRegion": _field(dep, "aws_region", ""),
        "Provider": _field(dep, "provider", ""),
    }
    return {k: (str(v) if v else MISSING) for k, v in values.items()}


def _rule_alarms(rule: _RuleView, namespace: str, sets: list[tuple[str, ...]], catalog: list[dict[str, str]] | None,
                 prefix: str, actions: Sequence[str]) -> list[dict[str, Any]]:
    if rule.disabled:
        raise _Unmappable("disabled")
    if rule.budget:
        raise _Unmappable("budget rules run over calendar periods; CloudWatch alarms cannot")
    signal = SIGNALS.get(rule.signal)
    if signal is None:
        raise _Unmappable(f"signal {rule.signal!r} has no CloudWatch metric")
    signal, filters, notes = _apply_where(signal, rule)
    unmapped = [label for label in rule.by if label not in LABEL_DIMENSIONS]
    if unmapped:
        raise _Unmappable(f"`by` label {unmapped[0]!r} is not a CloudWatch dimension")
    group_dims = [LABEL_DIMENSIONS[label] for label in rule.by]
    dims, group_dims, filters, set_note = _choose_set(sets, group_dims, filters, catalog)
    if set_note:
        notes.append(set_note)
    mode, stat = _statistic(signal, rule)

    period = _period(rule.over)
    evaluation = 1 + math.ceil(rule.pending / period) if rule.pending else 1
    if rule.pending % period:
        notes.append(f"for={rule.pending:g}s rounded up to whole {period}s periods")
    if rule.keep_firing_for:
        notes.append("keep_firing_for is not enforced by CloudWatch")
    if rule.min_events > 1:
        notes.append("min_events is not enforced by CloudWatch")
    if rule.overrides:
        notes.append("per-label overrides are not exported: the rule's own threshold applies to every series")
    window_cap = MI_MAX_WINDOW if mode == "insights" else MAX_WINDOW
    if evaluation * period > window_cap:
        evaluation = max(1, window_cap // period)
        notes.append(f"evaluation window capped at {window_cap}s")
    bounds = [(op, value) for op, value in (("GreaterThanThreshold", rule.above), ("LessThanThreshold", rule.below))
              if value is not None]
    if not bounds:
        raise _Unmappable("no `above` or `below` threshold")

    base: dict[str, Any] = {"ActionsEnabled": True, "EvaluationPeriods": evaluation, "DatapointsToAlarm": evaluation}
    if actions:
        base["AlarmActions"] = list(actions)
        base["OKActions"] = list(actions)
    out = []
    for op, raw_threshold in bounds:
        try:
            threshold = float(raw_threshold)
        except (TypeError, ValueError):
            raise _Unmappable(f"threshold {raw_threshold!r} is not a number") from None
        if signal.kind == "distribution" and rule.aggregate != "count":
            threshold *= signal.scale
        if rule.aggregate == "rate":
            threshold *= period  # per second -> per period (the alarm sees sums)
        suffix = "" if len(bounds) == 1 else ("-high" if op.startswith("Greater") else "-low")
        missing = "breaching" if op.startswith("Less") and signal.kind in ("counter", "total") else "notBreaching"
        rule_threshold = float(raw_threshold)
        common = dict(base, Threshold=threshold, ComparisonOperator=op, TreatMissingData=missing,
                      AlarmDescription=_description(rule, notes, {}, rule_threshold))
        if mode == "insights":
            query = _insights_query(namespace, stat, signal.metric, dims, filters, group_dims, op)
            out.append(dict(common, AlarmName=_name(prefix, rule.alert, suffix), Metrics=[
                {"Id": "q1", "Expression": query, "Period": period, "ReturnData": True, "Label": rule.alert}]))
            continue
        for known in _combinations(dims, filters, group_dims, catalog, mode):
            values = {d: v for d, v in known.items() if d in dims}
            label = "/".join(values[d] for d in dims if d in group_dims)
            name = _name(prefix, rule.alert, suffix + (f"-{label}" if label else ""))
            labels = {DIMENSION_LABELS[d]: v for d, v in known.items()}
            described = dict(common, AlarmDescription=_description(rule, notes, labels, rule_threshold))
            out.append(_concrete_alarm(described, name, namespace, dims, values, filters, signal, stat, period,
                                       rule.alert, mode))
    return out


def _apply_where(signal: AlarmMetric, rule: _RuleView) -> tuple[AlarmMetric, dict[str, _Filter], list[str]]:
    filters: dict[str, _Filter] = {}
    notes: list[str] = []
    success_only = False
    for label, op, values in rule.where:
        if label in LABEL_DIMENSIONS:
            if op not in ("=", "!=", "in"):
                raise _Unmappable(f"`where` {label}: regular expressions have no CloudWatch equivalent")
            dim = LABEL_DIMENSIONS[label]
            if dim in filters:
                raise _Unmappable(f"`where` {label} given twice")
            for value in values:
                repr_mi(value)  # refuses quotes early
            filters[dim] = _Filter(op, values)
            continue
        plain = values[0] if op == "=" and len(values) == 1 else None
        if label == "status" and plain == "success" and signal.kind == "distribution":
            success_only = True  # what the sink publishes anyway
        elif label == "status" and plain == "failure" and rule.signal == "requests":
            signal = SIGNALS["errors"]
        elif label == "rate_limited" and plain == "true" and rule.signal in ("requests", "errors"):
            signal = SIGNALS["rate_limited"]
        elif label == "health_check" and plain == "false":
            continue  # health checks never reach CloudWatch
        else:
            raise _Unmappable(f"`where` on {label} has no CloudWatch dimension")
    if signal.kind == "distribution" and not success_only:
        notes.append("CloudWatch latency covers successful attempts only")
    return signal, filters, notes


def _choose_set(sets: list[tuple[str, ...]], group_dims: list[str], filters: dict[str, _Filter],
                catalog: list[dict[str, str]] | None
                ) -> tuple[tuple[str, ...], list[str], dict[str, _Filter], str]:
    """The smallest published dimension set covering `by` and `where`, or one with Deployment
    standing in for the labels a deployment determines: (set, group-by, filters, note)."""
    needed = set(group_dims) | set(filters)
    covering = [s for s in sets if needed <= set(s)]
    if covering:
        return min(covering, key=len), group_dims, filters, ""
    determined = needed - {"Deployment"} <= DEPLOYMENT_DETERMINES
    with_deployment = [s for s in sets if "Deployment" in s]
    if ("Deployment" in group_dims or "Deployment" in filters) and determined and with_deployment:
        dims = min(with_deployment, key=lambda s: (len(set(filters) - set(s)), len(s)))
        missing = {d: f for d, f in filters.items() if d not in dims}
        if missing:
            if catalog is None:
                raise _Unmappable(f"`where` on {', '.join(sorted(missing))} needs a dimension set with it, or the "
                                  "deployment catalog (--config) to turn it into a Deployment filter")
            allowed = sorted({dep["Deployment"] for dep in catalog if all(f(dep[d]) for d, f in missing.items())})
            if not allowed:
                raise _Unmappable("no catalog deployment matches the rule's `where`")
            if "Deployment" in filters:
                allowed = [d for d in allowed if filters["Deployment"](d)]
            filters = {d: f for d, f in filters.items() if d in dims}
            filters["Deployment"] = _Filter("in", tuple(allowed))
        return dims, [d for d in group_dims if d in dims], filters, \
            "grouped by Deployment, which determines model group, account, region and provider"
    wanted = ", ".join(sorted(needed)) or "(none)"
    raise _Unmappable(f"no published dimension set covers {wanted}; add one to cloudwatch.dimensions")


def _statistic(signal: AlarmMetric, rule: _RuleView) -> tuple[str, str]:
    """(mode, statistic); mode is insights | stat | ratio | total."""
    aggregate, name = rule.aggregate, rule.signal
    if signal.kind == "ratio":
        if aggregate not in ("ratio", "avg"):
            raise _Unmappable(f"aggregate {aggregate!r} of {name} has no CloudWatch equivalent")
        return "ratio", "Sum"
    if signal.kind == "total":
        if aggregate not in ("sum", "rate"):
            raise _Unmappable(f"aggregate {aggregate!r} of {name} has no CloudWatch equivalent")
        return "total", "Sum"
    if signal.kind == "counter":
        if aggregate == "count" and not signal.countable:
            raise _Unmappable(f"count of {name} events has no CloudWatch metric (use sum)")
        if aggregate not in ("sum", "count", "rate"):
            raise _Unmappable(f"aggregate {aggregate!r} of {name} has no CloudWatch equivalent")
        return "insights", _MI_FUNCTIONS[aggregate]
    if re.fullmatch(r"p\d{1,2}(\.\d+)?", aggregate):
        return "stat", aggregate
    if aggregate in ("avg", "min", "max", "sum"):
        return "insights", _MI_FUNCTIONS[aggregate]
    if aggregate == "count":
        return "insights", "COUNT"
    raise _Unmappable(f"aggregate {aggregate!r} of {name} has no CloudWatch equivalent")


def _insights_query(namespace: str, function: str, metric: str, dims: tuple[str, ...], filters: dict[str, _Filter],
                    group_dims: list[str], op: str) -> str:
    schema = ", ".join([f'"{namespace}"', *dims])
    query = f"SELECT {function}({metric}) FROM SCHEMA({schema})"
    if filters:
        query += " WHERE " + " AND ".join(f.insights(d) for d, f in sorted(filters.items()))
    if group_dims:
        order = "DESC" if op.startswith("Greater") else "ASC"
        query += f" GROUP BY {', '.join(group_dims)} ORDER BY {function}() {order}"
    return query


def _combinations(dims: tuple[str, ...], filters: dict[str, _Filter], group_dims: list[str],
                  catalog: list[dict[str, str]] | None, mode: str) -> list[dict[str, str]]:
    pinned = {d: f.values[0] for d, f in filters.items() if f.op == "=" and len(f.values) == 1}
    if set(dims) <= set(pinned):
        return [{d: pinned[d] for d in dims}]  # everything pinned by `where` (or the empty set)
    if not group_dims:
        if mode in ("ratio", "total"):
            return [pinned]  # one sum over every matching series of the set, via Metrics Insights
        raise _Unmappable("a percentile without `by` needs an empty dimension set ([]) in cloudwatch.dimensions "
                          "or `where` pinning every dimension")
    if catalog is None:
        raise _Unmappable(f"{'percentile' if mode == 'stat' else mode} alarms need concrete {'/'.join(dims)} values: "
                          "pass the deployment catalog (--config) or pin them with `where`")
    seen: dict[tuple[str, ...], dict[str, str]] = {}
    for dep in catalog:
        if all(f(dep[d]) for d, f in filters.items()):
            key = tuple(dep[d] for d in dims)
            # one deployment: everything it determines is known too (for the description)
            seen.setdefault(key, dict(dep) if "Deployment" in dims else {d: dep[d] for d in dims})
    if not seen:
        raise _Unmappable("no catalog deployment matches the rule's `where`")
    return [seen[k] for k in sorted(seen)]


def _metric(namespace: str, name: str, dims: tuple[str, ...], values: dict[str, str]) -> dict[str, Any]:
    return {"Namespace": namespace, "MetricName": name,
            "Dimensions": [{"Name": d, "Value": values[d]} for d in dims]}


def _concrete_alarm(common: dict[str, Any], name: str, namespace: str, dims: tuple[str, ...],
                    values: dict[str, str], filters: dict[str, _Filter], signal: AlarmMetric, stat: str, period: int,
                    alert: str, mode: str) -> dict[str, Any]:
    if mode == "stat":
        alarm = dict(common, AlarmName=name, Period=period, **_metric(namespace, signal.metric, dims, values))
        alarm["ExtendedStatistic"] = stat
        return alarm
    operator = "/" if mode == "ratio" else "+"
    if set(values) >= set(dims):
        first = {"Id": "m1", "ReturnData": False, "MetricStat": {
            "Metric": _metric(namespace, signal.metric, dims, values), "Period": period, "Stat": "Sum"}}
        second = {"Id": "m2", "ReturnData": False, "MetricStat": {
            "Metric": _metric(namespace, signal.second, dims, values), "Period": period, "Stat": "Sum"}}
    else:  # over every matching series of the set: sums via Metrics Insights
        first = {"Id": "m1", "ReturnData": False, "Period": period, "Expression": _insights_query(
            namespace, "SUM", signal.metric, dims, filters, [], "GreaterThanThreshold")}
        second = {"Id": "m2", "ReturnData": False, "Period": period, "Expression": _insights_query(
            namespace, "SUM", signal.second, dims, filters, [], "GreaterThanThreshold")}
    result = {"Id": "e1", "Expression": f"m1 {operator} m2", "ReturnData": True, "Label": alert}
    return dict(common, AlarmName=name, Metrics=[first, second, result])


def _name(prefix: str, alert: str, suffix: str) -> str:
    name = f"{prefix}{alert}{suffix}"
    return "".join(ch if ch.isprintable() else "_" for ch in name)[:255]


_TEMPLATE_RE = re.compile(r"\{\{-?\s*(labels\.)?(\w+)[^}]*\}\}")
_BLOCK_RE = re.compile(r"\{%.*?%\}", re.DOTALL)


def _summary(source: str, rule: _RuleView, labels: Mapping[str, str], threshold: float) -> str:
    """The rule's summary with what is known at export time filled in (labels of a concrete
    alarm, the window, the threshold) and `<name>` for what only the evaluation knows."""
    known = {"over": f"{rule.over:g}s", "threshold": f"{threshold:g}"}

    def fill(match: re.Match[str]) -> str:
        name = match.group(2)
        if match.group(1):
            return labels.get(name, f"<{name}>")
        return known.get(name, f"<{name}>")

    return " ".join(_TEMPLATE_RE.sub(fill, _BLOCK_RE.sub("", source)).split())


def _description(rule: _RuleView, notes: list[str], labels: Mapping[str, str], threshold: float) -> str:
    text = f"gatewatch rule {rule.group}/{rule.alert}: {rule.aggregate or 'value'} of {rule.signal} " \
           f"over {rule.over:g}s."
    if rule.summary:
        text = f"{_summary(rule.summary, rule, labels, threshold)} ({text})"
    if notes:
        text += " Note: " + "; ".join(notes) + "."
    return text[:1024]


# -- CloudFormation -----------------------------------------------------------------

_CFN_KEYS = ("AlarmName", "AlarmDescription", "ActionsEnabled", "Namespace", "MetricName", "Dimensions", "Statistic",
             "ExtendedStatistic", "Period", "EvaluationPeriods", "DatapointsToAlarm", "Threshold",
             "ComparisonOperator", "TreatMissingData", "Metrics", "Unit")


def alarms_to_cloudformation(alarms: Sequence[Mapping[str, Any]], description: str = "gatewatch CloudWatch alarms"
                             ) -> dict[str, Any]:
    """A CloudFormation template with one AWS::CloudWatch::Alarm per alarm; actions come from
    the optional AlarmTopicArn parameter (an SNS topic)."""
    resources: dict[str, Any] = {}
    for alarm in alarms:
        props = {k: alarm[k] for k in _CFN_KEYS if k in alarm}
        topic = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
        props["AlarmActions"] = topic
        props["OKActions"] = topic
        resources[_logical_id(str(alarm["AlarmName"]), resources)] = {"Type": "AWS::CloudWatch::Alarm",
                                                                      "Properties": props}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": description,
        "Parameters": {"AlarmTopicArn": {"Type": "String", "Default": "",
                                         "Description": "SNS topic for alarm and OK notifications (empty: none)"}},
        "Conditions": {"HasAlarmTopic": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}},
        "Resources": resources,
    }


def _logical_id(name: str, taken: Mapping[str, Any]) -> str:
    base = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)[:240] or "Alarm"
    logical, n = base, 2
    while logical in taken:
        logical, n = f"{base}{n}", n + 1
    return logical
