"""gatewatch rules -> Prometheus alerting rules over the metrics gatewatch exports.

For teams that alert from Prometheus/Grafana instead of (or as well as) the sidecar: each
rule becomes PromQL over the `litellm_*` / `gatewatch_*` series, with `by` as the
aggregation labels (renamed back with `label_replace`, so `deployment`, `key_alias`...
exist on the alert as in gatewatch), `where` as label matchers, `min_events` as an
`and` on the matching count, and `for`/`keep_firing_for`/labels/annotations carried
over (`{{ value }}` -> `{{ $value }}`). What PromQL cannot say is skipped with the reason,
never approximated silently: `consecutive`, matchers on labels a metric does not have.
Calendar budgets are exported as rolling windows of the period's length (said so in an
annotation). The output passes `promtool check rules`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.matchers import Matcher
from agent.rules.exports.skipped import Skipped
from agent.rules.model import Rule, RuleSet

DEP = {"model": "litellm_model_name", "deployment": "model_id", "api_base": "api_base", "api_provider": "api_provider",
       "model_group": "model_group", "requested_model": "requested_model", "key_alias": "api_key_alias",
       "team": "team", "team_alias": "team_alias", "aws_account": "aws_account", "aws_region": "aws_region"}
LAT = {"model": "model", "model_group": "model_group", "deployment": "model_id", "requested_model": "requested_model",
       "api_provider": "api_provider", "key_alias": "api_key_alias", "team": "team", "team_alias": "team_alias",
       "org_id": "org_id", "org_alias": "org_alias", "aws_account": "aws_account", "aws_region": "aws_region"}
STATE = {"model": "litellm_model_name", "deployment": "model_id", "api_base": "api_base",
         "api_provider": "api_provider", "model_group": "model_group", "aws_account": "aws_account",
         "aws_region": "aws_region"}
RATE_LIMITED = {"model_group": "model_group", "deployment": "model_id", "api_provider": "api_provider",
                "aws_account": "aws_account", "aws_region": "aws_region", "normalized_error": "normalized_error"}
REMAINING = {"model_group": "model_group", "api_provider": "api_provider", "api_base": "api_base",
             "model": "litellm_model_name", "deployment": "model_id", "key_alias": "api_key_alias",
             "aws_account": "aws_account", "aws_region": "aws_region"}
PROXY = {"requested_model": "requested_model", "deployment": "model_id", "api_provider": "api_provider",
         "key_alias": "api_key_alias", "team": "team", "team_alias": "team_alias", "org_id": "org_id",
         "org_alias": "org_alias", "route": "route", "aws_account": "aws_account", "aws_region": "aws_region"}
RETRIES = {"model_group": "model_group", "deployment": "model_id", "aws_account": "aws_account",
           "aws_region": "aws_region", "source": "source"}
FALLBACK = {"requested_model": "requested_model", "model_group": "fallback_model", "key_alias": "api_key_alias",
            "team": "team", "team_alias": "team_alias"}


def _intersect(a: dict[str, str], b: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in a.items() if b.get(k) == v}


@dataclass(frozen=True)
class PromSignal:
    kind: str  # counter | ratio | histogram | gauge | quota | inverse_histogram
    metric: str
    labels: dict[str, str]
    implied: dict[str, str] = field(default_factory=dict)  # where-conditions the metric already means
    denominator: str = ""
    unit_events: bool = True  # each event adds 1 (so `count` = the counter)


SIGNALS: dict[str, PromSignal] = {
    "requests": PromSignal("counter", "litellm_deployment_total_requests_total", DEP),
    "errors": PromSignal("counter", "litellm_deployment_failure_responses_total",
                         {**DEP, "status_code": "exception_status"}, {"status": "failure"}),
    "error_ratio": PromSignal("ratio", "litellm_deployment_failure_responses_total", DEP,
                              denominator="litellm_deployment_total_requests_total"),
    "rate_limited": PromSignal("counter", "gatewatch_rate_limited_requests_total", RATE_LIMITED,
                               {"rate_limited": "true"}),
    "rate_limited_ratio": PromSignal("ratio", "gatewatch_rate_limited_requests_total", _intersect(RATE_LIMITED, DEP),
                                     denominator="litellm_deployment_total_requests_total"),
    "latency_seconds": PromSignal("histogram", "litellm_llm_api_latency_metric", LAT, {"status": "success"}),
    "ttft_seconds": PromSignal("histogram", "litellm_llm_api_time_to_first_token_metric", LAT,
                               {"status": "success"}),
    "output_tokens_per_second": PromSignal("inverse_histogram", "litellm_deployment_latency_per_output_token", STATE,
                                           {"status": "success"}),
    "tokens_input": PromSignal("counter", "litellm_input_tokens_metric_total", LAT, {"status": "success"},
                               unit_events=False),
    "tokens_output": PromSignal("counter", "litellm_output_tokens_metric_total", LAT, {"status": "success"},
                                unit_events=False),
    "tokens_total": PromSignal("counter", "litellm_total_tokens_metric_total", LAT, {"status": "success"},
                               unit_events=False),
    "cost_usd": PromSignal("counter", "litellm_spend_metric_total", LAT, {"status": "success"}, unit_events=False),
    "retries": PromSignal("counter", "gatewatch_deployment_retries_total", RETRIES, unit_events=False),
    "cooldowns": PromSignal("counter", "litellm_deployment_cooled_down_total",
                            {**STATE, "status_code": "exception_status"}),
    "no_deployments": PromSignal("counter", "gatewatch_no_deployments_available_total", {"model_group": "model_group"}),
    "deployment_state": PromSignal("gauge", "litellm_deployment_state", STATE),
    "proxy_up": PromSignal("gauge", "gatewatch_proxy_up", {"endpoint": "endpoint"}),
    "proxy_errors": PromSignal("counter", "gatewatch_proxy_errors_total",
                               {"error_class": "error_class", "source": "source"}),
    "remaining_requests": PromSignal("gauge", "litellm_remaining_requests_metric", REMAINING),
    "remaining_tokens": PromSignal("gauge", "litellm_remaining_tokens_metric", REMAINING),
    "quota_utilization": PromSignal("quota", "litellm_deployment_total_requests_total", _intersect(DEP, LAT)),
    "outcomes": PromSignal("counter", "litellm_proxy_total_requests_metric_total",
                           {**PROXY, "status_code": "status_code"}),
    "outcome_errors": PromSignal("counter", "litellm_proxy_failed_requests_metric_total",
                                 {**PROXY, "status_code": "exception_status"}, {"status": "failure"}),
    "outcome_error_ratio": PromSignal("ratio", "litellm_proxy_failed_requests_metric_total", PROXY,
                                      denominator="litellm_proxy_total_requests_metric_total"),
}
FALLBACK_METRICS = {"success": "litellm_deployment_successful_fallbacks_total",
                    "failure": "litellm_deployment_failed_fallbacks_total"}


class Unexportable(Exception):
    pass


@dataclass
class Export:
    groups: list[dict[str, Any]]
    skipped: list[Skipped]


def prom_duration(seconds: float) -> str:
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    s = int(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def _num(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


def _selector(metric: str, matchers: Iterable[str]) -> str:
    items = list(matchers)
    return f"{metric}{{{', '.join(items)}}}" if items else metric


class _RuleExporter:
    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    def signal(self) -> PromSignal:
        rule = self.rule
        if rule.signal == "fallbacks":
            status = next((m.value for m in rule.where if m.name == "status" and m.op == "="), None)
            if status not in FALLBACK_METRICS:
                raise Unexportable("fallbacks export needs `where: {status: success}` or `{status: failure}` "
                                   "(two different metrics)")
            return PromSignal("counter", FALLBACK_METRICS[status], FALLBACK, {"status": status})
        found = SIGNALS.get(rule.signal)
        if found is None:
            raise Unexportable(f"signal {rule.signal} has no exported metric")
        return found

    def matchers(self, sig: PromSignal, where: Iterable[Matcher]) -> list[str]:
        out = []
        for m in where:
            if m.name in sig.implied:
                if m.op == "=" and m.value == sig.implied[m.name]:
                    continue
                raise Unexportable(f"`where` {m.describe()}: the metric {sig.metric} only has "
                                   f"{m.name}={sig.implied[m.name]}")
            if m.name == "health_check" and m.op == "=" and m.value == "false":
                continue  # health checks never reach the litellm_* series
            target = sig.labels.get(m.name)
            if target is None:
                raise Unexportable(f"`where` on {m.name}: {sig.metric} has no such label")
            out.append(_promql(m, target))
        return out

    def by(self, sig: PromSignal) -> list[str]:
        missing = [b for b in self.rule.by if b not in sig.labels]
        if missing:
            raise Unexportable(f"`by` {missing[0]}: {sig.metric} has no such label")
        return [sig.labels[b] for b in self.rule.by]

    def rename(self, expr: str, sig: PromSignal) -> str:
        """label_replace so the alert carries gatewatch's label names (deployment, key_alias...)."""
        for label in self.rule.by:
            source = sig.labels[label]
            if source != label:
                expr = f'label_replace({expr}, "{label}", "$1", "{source}", "(.*)")'
        return expr

    def value_expr(self, sig: PromSignal, extra: list[str]) -> tuple[str, str | None]:
        """(expression for the value, expression for the event count or None)."""
        rule = self.rule
        agg = rule.aggregate
        over = prom_duration(rule.over)
        matchers = self.matchers(sig, rule.where) + extra
        by = ", ".join(self.by(sig))
        sel = _selector(sig.metric, matchers)

        def sum_of(fn: str, metric_sel: str) -> str:
            return f"sum by ({by}) ({fn}({metric_sel}[{over}]))"

        if sig.kind == "counter":
            if agg == "count" and not sig.unit_events:
                raise Unexportable(f"`count` of {rule.signal}: only its sum is exported")
            if agg in ("count", "sum"):
                expr = sum_of("increase", sel)
                return expr, expr if sig.unit_events else None
            if agg == "rate":
                return sum_of("rate", sel), sum_of("increase", sel) if sig.unit_events else None
            if agg == "absent":
                lookback = prom_duration(max(rule.forget_after, rule.over * 2))
                had = f"sum by ({by}) (increase({sel}[{lookback}] offset {over})) > 0"
                now = f"sum by ({by}) (increase({sel}[{over}])) > 0"
                return f"({had}) unless on ({by}) ({now})", None
            raise Unexportable(f"aggregate {agg} of {rule.signal} has no PromQL form over {sig.metric}")
        if sig.kind == "ratio":
            if agg not in ("avg", "ratio"):
                raise Unexportable(f"aggregate {agg} of {rule.signal}: only the ratio is exported")
            den_matchers = matchers
            num = sum_of("increase", sel)
            den = sum_of("increase", _selector(sig.denominator, den_matchers))
            return f"({num} / {den})", den
        if sig.kind in ("histogram", "inverse_histogram"):
            count = sum_of("increase", _selector(sig.metric + "_count", matchers))
            if rule.quantile is not None:
                q = rule.quantile if sig.kind == "histogram" else 1.0 - rule.quantile
                le_by = ", ".join(["le", *self.by(sig)])
                buckets = _selector(sig.metric + "_bucket", matchers)
                inner = f"histogram_quantile({_num(q)}, sum by ({le_by}) (rate({buckets}[{over}])))"
                return (inner if sig.kind == "histogram" else f"(1 / {inner})"), count
            if agg == "avg" and sig.kind == "histogram":
                total = sum_of("rate", _selector(sig.metric + "_sum", matchers))
                return f"({total} / {sum_of('rate', _selector(sig.metric + '_count', matchers))})", count
            if agg == "count" and sig.kind == "histogram":
                return count, count
            raise Unexportable(f"aggregate {agg} of {rule.signal}: a histogram gives percentiles, avg and count")
        if sig.kind == "gauge":
            if agg == "last":
                return f"max by ({by}) ({sel})", None
            if agg in ("min", "max"):
                return f"{agg} by ({by}) ({agg}_over_time({sel}[{over}]))", None
            raise Unexportable(f"aggregate {agg} of the gauge {sig.metric}: use last, min or max")
        if sig.kind == "quota":
            by_list = self.by(sig)
            reqs = f"sum by ({by}) (rate({sel}[{over}])) * 60"
            toks = f"sum by ({by}) (rate({_selector('litellm_total_tokens_metric_total', matchers)}[{over}])) * 60"
            rpm = "max by (model_id) (litellm_deployment_rpm_limit)"
            tpm = "max by (model_id) (litellm_deployment_tpm_limit)"
            del by_list
            return f"(({reqs}) / on (model_id) group_left {rpm})", f"(({toks}) / on (model_id) group_left {tpm})"
        raise Unexportable(f"signal kind {sig.kind} not exportable")

    def conditions(self) -> list[tuple[str, float | None, list[str], str]]:
        """(comparison op, threshold, extra matchers, name suffix) per emitted rule (overrides split)."""
        rule = self.rule
        op = ">" if rule.above is not None else "<"
        if not rule.overrides:
            return [(op, rule.threshold, [], "")]
        out = []
        negated: list[str] = []
        sig = self.signal()
        for o in rule.overrides:
            if len(o.match) != 1:
                raise Unexportable("overrides matching on several labels are not exported")
            m = o.match[0]
            target = sig.labels[m.name] if m.name in sig.labels else None
            if target is None:
                raise Unexportable(f"override on {m.name}: {sig.metric} has no such label")
            value = o.above if o.above is not None else o.below
            out.append((op, value if value is not None else rule.threshold, [_promql(m, target)], ""))
            negated.append(_negate(m, target))
        out.insert(0, (op, rule.threshold, negated, ""))
        return out

    def rules(self) -> list[dict[str, Any]]:
        rule = self.rule
        if rule.budget is not None:
            return self.budget_rules()
        if rule.aggregate == "consecutive":
            raise Unexportable("`consecutive` (failures in a row) has no PromQL equivalent")
        sig = self.signal()
        out = []
        for op, threshold, extra, _suffix in self.conditions():
            value, count = self.value_expr(sig, extra)
            if sig.kind == "quota":
                expr = f"({value} {op} {_num(threshold or 0)}) or ({count} {op} {_num(threshold or 0)})"
            elif rule.aggregate == "absent":
                expr = value
            else:
                expr = f"{value} {op} {_num(threshold or 0)}"
                if count is not None and rule.min_events > 1:
                    expr = f"({expr}) and on ({', '.join(self.by(sig))}) ({count} >= {rule.min_events})"
            out.append(self.alert(self.rename(expr, sig), threshold))
        return out

    def budget_rules(self) -> list[dict[str, Any]]:
        rule = self.rule
        b = rule.budget
        assert b is not None
        metric = {"cost_usd": "litellm_spend_metric_total", "tokens_input": "litellm_input_tokens_metric_total",
                  "tokens_output": "litellm_output_tokens_metric_total",
                  "tokens_total": "litellm_total_tokens_metric_total",
                  "requests": "litellm_deployment_total_requests_total"}[b.signal]
        sig = PromSignal("counter", metric, LAT if b.signal != "requests" else DEP,
                         {"status": "success"} if b.signal != "requests" else {})
        missing = [x for x in b.by if x not in sig.labels]
        if missing:
            raise Unexportable(f"budget `by` {missing[0]}: {metric} has no such label")
        length = {"day": "1d", "week": "7d", "month": "30d"}[b.period]
        by = ", ".join(sig.labels[x] for x in b.by)
        matchers = self.matchers(sig, b.where)
        out = []
        keyed = [(k, v) for k, v in b.limits.items()]
        for fraction in b.thresholds:
            label = f"{_num(round(fraction * 100, 2))}%"
            cases: list[tuple[list[str], float]] = []
            if keyed:
                if len(b.by) != 1:
                    raise Unexportable("per-key budget limits are exported for a single `by` label only")
                target = sig.labels[b.by[0]]
                for key, limit in keyed:
                    cases.append(([*matchers, f"{target}={json.dumps(key)}"], limit))
                if b.limit is not None:
                    cases.append(([*matchers, *(f"{target}!={json.dumps(k)}" for k, _ in keyed)], b.limit))
            elif b.limit is not None:
                cases.append((matchers, b.limit))
            for sel_matchers, limit in cases:
                total = f"sum by ({by}) (increase({_selector(metric, sel_matchers)}[{length}]))" if by else \
                    f"sum(increase({_selector(metric, sel_matchers)}[{length}]))"
                expr = f"{total} >= {_num(limit * fraction)}"
                for x in b.by:
                    if sig.labels[x] != x:
                        expr = f'label_replace({expr}, "{x}", "$1", "{sig.labels[x]}", "(.*)")'
                names = {"spend": "$value", "limit": f'"{_num(limit)}"', "usage": f'"at least {label}"',
                         "projected": '"(not exported)"', "period": f'"rolling {length}"'}
                alert = self.alert(expr, limit * fraction, extra_labels={"threshold": label}, names=names)
                alert["annotations"]["gatewatch_note"] = (f"rolling {length} approximation of the calendar {b.period} "
                                                          f"budget (limit {_num(limit)})")
                out.append(alert)
        return out

    def alert(self, expr: str, threshold: float | None, extra_labels: dict[str, str] | None = None,
              names: dict[str, str] | None = None) -> dict[str, Any]:
        rule = self.rule
        item: dict[str, Any] = {"alert": rule.alert, "expr": expr}
        if rule.for_:
            item["for"] = prom_duration(rule.for_)
        if rule.keep_firing_for:
            item["keep_firing_for"] = prom_duration(rule.keep_firing_for)
        labels = {**(extra_labels or {}), **rule.labels}
        if labels:
            item["labels"] = labels
        item["annotations"] = {name: convert_template(t.source, rule, threshold, names)
                               for name, t in rule.annotations.items()}
        return item


def _promql(m: Matcher, target: str) -> str:
    """`m` as a PromQL label matcher on the metric's label `target` (a list is its regex)."""
    return f"{target}{m.operator}{json.dumps(m.value)}"


def _negate(m: Matcher, target: str) -> str:
    """The matcher selecting what `m` does not (the rule's series outside its overrides)."""
    flipped = {"=": "!=", "!=": "=", "=~": "!~", "!~": "=~"}[m.operator]
    return f"{target}{flipped}{json.dumps(m.value)}"


_EXPR_RE = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
_FILTERS = {"humanize": "humanize", "humanize_percentage": "humanizePercentage",
            "humanize_duration": "humanizeDuration"}


def convert_template(source: str, rule: Rule, threshold: float | None,
                     names: dict[str, str] | None = None) -> str:
    """gatewatch's Jinja annotation -> a Prometheus (Go) template, for the common forms.

    `names` maps template variables to Go expressions (`spend` -> `$value` for budgets) or,
    quoted, to literal text; anything else without a Prometheus equivalent stays as `(name)`.
    """
    if "{%" in source:
        source = re.sub(r"\{%.*?%\}", "", source, flags=re.S)
    names = names or {}

    def one(match: re.Match[str]) -> str:
        parts = [p.strip() for p in match.group(1).split("|")]
        head, filters = parts[0], parts[1:]
        if head in names:
            target = names[head]
            if target.startswith('"'):
                return target.strip('"')
        elif head == "value":
            target = "$value"
        elif head.startswith("labels."):
            target = "$labels." + head[len("labels."):]
        elif head == "threshold" and threshold is not None:
            return _num(threshold)
        elif head == "rule":
            return rule.alert
        elif head == "over":
            return prom_duration(rule.over)
        else:
            return f"({head})"  # no Prometheus equivalent: keep the name as text
        for f in filters:
            name = f.split("(", 1)[0].strip()
            if name in _FILTERS:
                target = f"{target} | {_FILTERS[name]}"
            elif name in ("round", "money"):
                digits = re.findall(r"\d+", f) if name == "round" else ["2"]
                target = f'printf "%.{digits[0] if digits else 0}f" {target}'
        return "{{ " + target + " }}"

    return _EXPR_RE.sub(one, source)


def export_prometheus(rule_set: RuleSet) -> Export:
    groups = []
    skipped: list[Skipped] = []
    for group in rule_set.groups:
        rules = []
        for rule in group.rules:
            try:
                rules.extend(_RuleExporter(rule).rules())
            except Unexportable as exc:
                skipped.append(Skipped(rule.group, rule.id[len(rule.group) + 1:], str(exc)))
        if rules:
            groups.append({"name": group.name, "interval": prom_duration(group.interval), "rules": rules})
    return Export(groups, skipped)


def raw_groups(rule_set: RuleSet) -> list[dict[str, Any]]:
    """Rule set as plain dicts (values applied, env interpolated), for other exporters."""
    return [{"name": g.name, "interval": g.interval, "rules": [dict(r.raw) for r in g.rules]}
            for g in rule_set.groups]
