"""Generate gatewatch's Grafana dashboards (dashboards/grafana/*.json) from one place.

Why a generator: five dashboards share selectors, template variables, units and layout;
hand-edited JSON drifts (a renamed label fixed in one panel and not the next). The JSON
files are committed so Grafana can provision them as they are; `tests/test_dashboards_static.py`
fails when they differ from what this script writes, and `tests/test_dashboards_prometheus.py`
runs every query below against a real Prometheus scraping a real gatewatch.

    python dashboards/build.py            # rewrite dashboards/grafana/*.json
    python dashboards/build.py --check    # exit 1 if a committed file is out of date

Metric and label names are gatewatch's (README "Metric reference"); recording rules named
`gatewatch:*` are in dashboards/prometheus/recording_rules.yml and must be loaded by the
Prometheus the dashboards read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "grafana"
SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x
DS = {"type": "prometheus", "uid": "${datasource}"}

# Label filters. Proxy-level metrics (one per client request) carry `requested_model`, the
# model group the client asked for, instead of `model_group`.
# Every query is limited to the scrape jobs that expose gatewatch (`$job`, whose "All" is the
# list of those jobs, not `.*`): a Prometheus that also scrapes LiteLLM's own /metrics has
# series of the same names, which would otherwise be counted twice.
JOB = 'job=~"$job"'
DEP = f'{JOB}, model_group=~"$model_group", aws_account=~"$aws_account", aws_region=~"$aws_region"'
PROXY = f'{JOB}, requested_model=~"$model_group", aws_account=~"$aws_account", aws_region=~"$aws_region"'
INST = f'{JOB}, instance=~"$instance"'
RI = "$__rate_interval"
DEPLOYMENT = "model_id, aws_account, aws_region"
# Bedrock quota headroom (agent/quotas): per account, region and model, no model group
QUOTA = f'{JOB}, aws_account=~"$aws_account", aws_region=~"$aws_region"'
QUOTA_KEY = "aws_account, aws_region, model, quota, inference"

# recording rules (dashboards/prometheus/recording_rules.yml)
R_LATENCY = "gatewatch:litellm_request_total_latency_metric_bucket:rate5m"
R_TTFT = "gatewatch:litellm_llm_api_time_to_first_token_metric_bucket:rate5m"
R_API_LATENCY = "gatewatch:litellm_llm_api_latency_metric_bucket:rate5m"
R_SPEND = "gatewatch:litellm_spend_metric:increase5m"

HEALTH_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "healthy", "color": "green", "index": 0},
    "1": {"text": "partial outage", "color": "orange", "index": 1},
    "2": {"text": "complete outage", "color": "red", "index": 2},
}}]


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


GREEN = thresholds(("green", None))
RATIO_STEPS = thresholds(("green", None), ("orange", 0.8), ("red", 1))
ERROR_STEPS = thresholds(("green", None), ("orange", 0.01), ("red", 0.05))


def target(expr: str, legend: str = "__auto", instant: bool = False, table: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "editorMode": "code", "expr": expr, "legendFormat": legend,
                         "range": not instant, "instant": instant}
    if table:
        t["format"] = "table"
    return t


class Panel:
    """One panel; `size` is (width, height) in grid units, placed by Dashboard.layout()."""

    def __init__(self, kind: str, title: str, description: str, targets: list[dict[str, Any]], unit: str = "short",
                 size: tuple[int, int] = (12, 8), **extra: Any) -> None:
        self.kind, self.title, self.description, self.targets = kind, title, description, targets
        self.unit, self.size, self.extra = unit, size, extra

    def render(self, pid: int, pos: dict[str, int]) -> dict[str, Any]:
        defaults: dict[str, Any] = {"unit": self.unit, "thresholds": self.extra.get("thresholds", GREEN),
                                    "mappings": self.extra.get("mappings", [])}
        if "decimals" in self.extra:
            defaults["decimals"] = self.extra["decimals"]
        for key in ("min", "max"):
            if key in self.extra:
                defaults[key] = self.extra[key]
        options: dict[str, Any]
        if self.kind == "timeseries":
            defaults["color"] = {"mode": "palette-classic"}
            defaults["custom"] = {"drawStyle": self.extra.get("draw", "line"), "lineWidth": 1, "fillOpacity": 10,
                                  "showPoints": "never", "spanNulls": False,
                                  "stacking": {"mode": "normal" if self.extra.get("stack") else "none",
                                               "group": "A"},
                                  "thresholdsStyle": {"mode": "line" if "thresholds" in self.extra else "off"}}
            options = {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                                  "calcs": ["mean", "max", "lastNotNull"]},
                       "tooltip": {"mode": "multi", "sort": "desc"}}
        elif self.kind in ("stat", "gauge"):
            defaults["color"] = {"mode": "thresholds"}
            options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                       "orientation": "auto", "textMode": "auto", "colorMode": "value", "graphMode": "area",
                       "justifyMode": "auto"}
            if self.kind == "gauge":
                options = {"reduceOptions": options["reduceOptions"], "showThresholdLabels": False,
                           "showThresholdMarkers": True}
        elif self.kind == "bargauge":
            defaults["color"] = {"mode": "thresholds"}
            options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                       "orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
                       "valueMode": "color", "namePlacement": "auto", "sizing": "auto"}
        elif self.kind == "state-timeline":
            defaults["color"] = {"mode": "thresholds"}
            defaults["custom"] = {"fillOpacity": 80, "lineWidth": 0}
            options = {"mergeValues": True, "showValue": "never", "alignValue": "left", "rowHeight": 0.9,
                       "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                       "tooltip": {"mode": "single", "sort": "none"}}
        elif self.kind == "table":
            defaults["custom"] = {"align": "auto", "cellOptions": {"type": "auto"}}
            options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
        else:
            raise ValueError(self.kind)
        panel: dict[str, Any] = {
            "id": pid, "type": self.kind, "title": self.title, "description": self.description, "datasource": DS,
            "gridPos": pos, "fieldConfig": {"defaults": defaults, "overrides": self.extra.get("overrides", [])},
            "options": options,
            "targets": [dict(t, refId=chr(ord("A") + i)) for i, t in enumerate(self.targets)],
        }
        if "transformations" in self.extra:
            panel["transformations"] = self.extra["transformations"]
        return panel


class Row:
    def __init__(self, title: str, panels: list[Panel]) -> None:
        self.title, self.panels = title, panels


def datasource_var() -> dict[str, Any]:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
            "regex": "", "skipUrlSync": False}


def query_var(name: str, label: str, query: str, all_value: str | None = ".*") -> dict[str, Any]:
    """A multi-select label_values() variable; `all_value` None makes "All" the regex of its values."""
    return {"name": name, "label": label, "type": "query", "datasource": DS, "definition": query,
            "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
            "refresh": 2, "includeAll": True, "allValue": all_value, "multi": True, "sort": 1, "regex": "",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "hide": 0, "options": [],
            "skipUrlSync": False}


def job_var() -> dict[str, Any]:
    return query_var("job", "Scrape job", "label_values(gatewatch_ready, job)", all_value=None)


def textbox_var(name: str, label: str, default: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "textbox", "query": default, "hide": 0, "skipUrlSync": False,
            "current": {"selected": False, "text": default, "value": default},
            "options": [{"selected": True, "text": default, "value": default}]}


def scope_vars() -> list[dict[str, Any]]:
    """datasource, model_group, aws_account, aws_region (chained: account and region follow the group)."""
    src = "litellm_deployment_total_requests_total"
    return [
        datasource_var(),
        job_var(),
        query_var("model_group", "Model group", f"label_values({src}{{{JOB}}}, model_group)"),
        query_var("aws_account", "AWS account",
                  f'label_values({src}{{{JOB}, model_group=~"$model_group"}}, aws_account)'),
        query_var("aws_region", "AWS region",
                  f'label_values({src}{{{JOB}, model_group=~"$model_group", aws_account=~"$aws_account"}}, '
                  f'aws_region)'),
    ]


def instance_vars() -> list[dict[str, Any]]:
    return [datasource_var(), job_var(),
            query_var("instance", "gatewatch instance", f"label_values(gatewatch_ready{{{JOB}}}, instance)")]


class Dashboard:
    def __init__(self, uid: str, title: str, description: str, variables: list[dict[str, Any]],
                 rows: list[Row], time_from: str = "now-6h") -> None:
        self.uid, self.title, self.description = uid, title, description
        self.variables, self.rows, self.time_from = variables, rows, time_from

    def layout(self) -> list[dict[str, Any]]:
        panels: list[dict[str, Any]] = []
        pid, y = 1, 0
        for row in self.rows:
            panels.append({"id": pid, "type": "row", "title": row.title, "collapsed": False, "panels": [],
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
            pid, y = pid + 1, y + 1
            x, line_height = 0, 0
            for panel in row.panels:
                w, h = panel.size
                if x + w > 24:
                    x, y, line_height = 0, y + line_height, 0
                panels.append(panel.render(pid, {"h": h, "w": w, "x": x, "y": y}))
                pid, x, line_height = pid + 1, x + w, max(line_height, h)
            y += line_height
        return panels

    def render(self) -> dict[str, Any]:
        return {
            "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                      "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                      "name": "Annotations & Alerts", "type": "dashboard"}]},
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": [{"asDropdown": True, "icon": "external link", "includeVars": True, "keepTime": True,
                       "tags": ["gatewatch"], "targetBlank": False, "title": "gatewatch dashboards",
                       "type": "dashboards"}],
            "panels": self.layout(),
            "refresh": "30s",
            "schemaVersion": SCHEMA_VERSION,
            "tags": ["gatewatch", "litellm"],
            "templating": {"list": self.variables},
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {},
            "timezone": "browser",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "",
        }


def ts(title: str, description: str, targets: list[dict[str, Any]], unit: str = "short", **kw: Any) -> Panel:
    return Panel("timeseries", title, description, targets, unit, **kw)


def stat(title: str, description: str, expr: str, unit: str = "short", **kw: Any) -> Panel:
    kw.setdefault("size", (4, 4))
    return Panel("stat", title, description, [target(expr)], unit, **kw)


def bars(title: str, description: str, expr: str, legend: str, unit: str, **kw: Any) -> Panel:
    kw.setdefault("size", (8, 8))
    return Panel("bargauge", title, description, [target(expr, legend, instant=True)], unit, **kw)


def quantiles(source: str, by: str = "le") -> list[dict[str, Any]]:
    """p50/p95/p99 targets over a recorded, already-aggregated bucket rate."""
    return [target(f"histogram_quantile({q}, sum by ({by}) ({source}))", f"p{round(q * 100)}")
            for q in (0.5, 0.95, 0.99)]


# --------------------------------------------------------------------------------------------------
def overview() -> Dashboard:
    req = f"litellm_proxy_total_requests_metric_total{{{PROXY}}}"
    failed = f"litellm_proxy_failed_requests_metric_total{{{PROXY}}}"
    return Dashboard(
        "gatewatch-overview", "gatewatch / Overview",
        "LiteLLM traffic, errors, throttling, latency, tokens and spend across accounts and regions.",
        scope_vars(),
        [
            Row("Now", [
                stat("Requests / s", "Client requests to the proxy (retries and fallbacks merged into one).",
                     f"sum(rate({req}[{RI}]))", "reqps"),
                stat("Error ratio", "Share of client requests that failed after retries and fallbacks.",
                     f"sum(rate({failed}[{RI}])) / sum(rate({req}[{RI}]))", "percentunit",
                     thresholds=ERROR_STEPS),
                stat("429s / s", "Throttled calls: provider 429s, Bedrock ThrottlingException and "
                     "'No deployments available'.",
                     f"sum(rate(gatewatch_rate_limited_requests_total{{{DEP}}}[{RI}]))", "reqps"),
                stat("p95 latency", "End-to-end request latency, 95th percentile (successful requests).",
                     f"histogram_quantile(0.95, sum by (le) ({R_LATENCY}{{{DEP}}}))", "s"),
                stat("Tokens / s", "Input + output tokens of successful calls.",
                     f"sum(rate(litellm_total_tokens_metric_total{{{DEP}}}[{RI}]))", "short"),
                stat("Spend (time range)", "USD spent in the selected time range.",
                     f"sum(increase(litellm_spend_metric_total{{{DEP}}}[$__range]))", "currencyUSD", decimals=2),
            ]),
            Row("Traffic and errors", [
                ts("Requests / s by status code", "Proxy responses to clients by HTTP status code.",
                   [target(f"sum by (status_code) (rate({req}[{RI}]))", "{{status_code}}")], "reqps",
                   stack=True),
                ts("Error ratio by model group", "Failed / total client requests per requested model group.",
                   [target(f"sum by (requested_model) (rate({failed}[{RI}])) / "
                           f"sum by (requested_model) (rate({req}[{RI}]))", "{{requested_model}}")],
                   "percentunit", thresholds=ERROR_STEPS, min=0),
                ts("Failures / s by exception", "Failed client requests by LiteLLM exception class and status.",
                   [target(f"sum by (exception_class, exception_status) (rate({failed}[{RI}]))",
                           "{{exception_status}} {{exception_class}}")], "reqps"),
                ts("429s / s by model group and region",
                   "Provider throttling (429, ThrottlingException) and router 'No deployments available'.",
                   [target(f"sum by (model_group, aws_region, normalized_error) "
                           f"(rate(gatewatch_rate_limited_requests_total{{{DEP}}}[{RI}]))",
                           "{{model_group}} {{aws_region}} {{normalized_error}}")], "reqps"),
            ]),
            Row("Latency", [
                ts("Request latency", "End-to-end latency of successful requests (recorded 5m rate).",
                   quantiles(f"{R_LATENCY}{{{DEP}}}"), "s"),
                ts("Time to first token", "Streaming calls only (recorded 5m rate).",
                   quantiles(f"{R_TTFT}{{{DEP}}}"), "s"),
                ts("LLM API latency p95 by model group", "Time spent waiting for the provider, per model group.",
                   [target(f"histogram_quantile(0.95, sum by (le, model_group) ({R_API_LATENCY}{{{DEP}}}))",
                           "{{model_group}}")], "s"),
                ts("LiteLLM overhead p95", "Latency LiteLLM itself adds on top of the provider call.",
                   [target(f"histogram_quantile(0.95, sum by (le) "
                           f"(rate(litellm_overhead_latency_metric_bucket{{{DEP}}}[{RI}])))", "p95")], "s"),
            ]),
            Row("Tokens and spend", [
                ts("Tokens / s", "Input and output tokens of successful calls.",
                   [target(f"sum(rate(litellm_input_tokens_metric_total{{{DEP}}}[{RI}]))", "input"),
                    target(f"sum(rate(litellm_output_tokens_metric_total{{{DEP}}}[{RI}]))", "output")],
                   "short", stack=True),
                ts("Tokens / s by model group", "Total tokens per model group.",
                   [target(f"sum by (model_group) (rate(litellm_total_tokens_metric_total{{{DEP}}}[{RI}]))",
                           "{{model_group}}")], "short"),
                bars("Spend by team (time range)", "USD per team alias in the selected time range.",
                     f"sum by (team_alias) (increase(litellm_spend_metric_total{{{DEP}}}[$__range]))",
                     "{{team_alias}}", "currencyUSD", decimals=2),
                bars("Spend by model group (time range)", "USD per model group in the selected time range.",
                     f"sum by (model_group) (increase(litellm_spend_metric_total{{{DEP}}}[$__range]))",
                     "{{model_group}}", "currencyUSD", decimals=2),
                ts("Spend rate by model group", "USD per hour.",
                   [target(f"sum by (model_group) (rate(litellm_spend_metric_total{{{DEP}}}[{RI}])) * 3600",
                           "{{model_group}}")], "currencyUSD", size=(8, 8)),
            ]),
        ])


def deployments() -> Dashboard:
    total = f"litellm_deployment_total_requests_total{{{DEP}}}"
    failures = f"litellm_deployment_failure_responses_total{{{DEP}}}"
    by = f"model_group, {DEPLOYMENT}"
    table_rename = {"renameByName": {"Value #A": "state", "Value #B": "requests/s", "Value #C": "failures/s",
                                     "Value #D": "remaining requests"},
                    "excludeByName": {"Time": True}, "indexByName": {}}
    return Dashboard(
        "gatewatch-deployments", "gatewatch / Deployments",
        "Per deployment (LiteLLM model_id), AWS account and region: health, cooldowns, retries, fallbacks, quota.",
        scope_vars(),
        [
            Row("Health", [
                Panel("state-timeline", "Deployment state",
                      "0 healthy, 1 partial outage (failed calls), 2 complete outage (cooldown / health check).",
                      [target(f"max by ({by}) (litellm_deployment_state{{{DEP}}})",
                              "{{model_id}} {{aws_account}}/{{aws_region}}")], "short", size=(24, 8),
                      mappings=HEALTH_MAPPINGS,
                      thresholds=thresholds(("green", None), ("orange", 1), ("red", 2))),
                Panel("table", "Deployments now", "Current state, traffic, failures and provider quota.",
                      [target(f"max by ({by}) (litellm_deployment_state{{{DEP}}})", instant=True, table=True),
                       target(f"sum by ({by}) (rate({total}[{RI}]))", instant=True, table=True),
                       target(f"sum by ({by}) (rate({failures}[{RI}]))", instant=True, table=True),
                       target(f"min by ({by}) (litellm_remaining_requests_metric{{{DEP}}})", instant=True,
                              table=True)],
                      "short", size=(16, 8),
                      overrides=[{"matcher": {"id": "byName", "options": "state"},
                                  "properties": [{"id": "mappings", "value": HEALTH_MAPPINGS},
                                                 {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                                                 {"id": "thresholds", "value": thresholds(
                                                     ("green", None), ("orange", 1), ("red", 2))}]}],
                      transformations=[{"id": "merge", "options": {}},
                                       {"id": "organize", "options": table_rename}]),
                ts("Proxy health endpoints", "1 when the proxy's /health endpoint answers OK (health polling).",
                   [target(f"min by (endpoint) (gatewatch_proxy_up{{{JOB}}})", "{{endpoint}}")], "short",
                   size=(8, 8),
                   min=0),
            ]),
            Row("Traffic and errors per deployment", [
                ts("Attempts / s per deployment", "Every attempt LiteLLM reports, success and failure.",
                   [target(f"sum by ({DEPLOYMENT}) (rate({total}[{RI}]))",
                           "{{model_id}} {{aws_account}}/{{aws_region}}")], "reqps"),
                ts("Failure ratio per deployment", "Failed / all attempts per deployment.",
                   [target(f"sum by ({DEPLOYMENT}) (rate({failures}[{RI}])) / "
                           f"sum by ({DEPLOYMENT}) (rate({total}[{RI}]))",
                           "{{model_id}} {{aws_account}}/{{aws_region}}")], "percentunit",
                   thresholds=ERROR_STEPS, min=0),
                ts("Failures / s by status", "Failed attempts per deployment and upstream status code.",
                   [target(f"sum by (model_id, exception_status) (rate({failures}[{RI}]))",
                           "{{model_id}} {{exception_status}}")], "reqps"),
                ts("429s / s per deployment", "429 / ThrottlingException per deployment, account and region.",
                   [target(f"sum by ({DEPLOYMENT}, normalized_error) "
                           f"(rate(gatewatch_rate_limited_requests_total{{{DEP}}}[{RI}]))",
                           "{{model_id}} {{aws_region}} {{normalized_error}}")], "reqps"),
                ts("LLM API latency p95 per deployment", "Provider latency per deployment (recorded 5m rate).",
                   [target(f"histogram_quantile(0.95, sum by (le, {DEPLOYMENT}) ({R_API_LATENCY}{{{DEP}}}))",
                           "{{model_id}} {{aws_account}}/{{aws_region}}")], "s"),
                ts("Latency per output token p95", "Seconds per generated token, per deployment.",
                   [target(f"histogram_quantile(0.95, sum by (le, {DEPLOYMENT}) "
                           f"(rate(litellm_deployment_latency_per_output_token_bucket{{{DEP}}}[{RI}])))",
                           "{{model_id}}")], "s"),
            ]),
            Row("Cooldowns, retries and fallbacks", [
                ts("Cooldowns", "Times the router put a deployment into cooldown (proxy logs).",
                   [target(f"sum by ({DEPLOYMENT}, exception_status) "
                           f"(increase(litellm_deployment_cooled_down_total{{{DEP}}}[{RI}]))",
                           "{{model_id}} {{exception_status}}")], "short", draw="bars"),
                ts("Router retries", "Retries per deployment (x-litellm-attempted-retries and proxy logs).",
                   [target(f"sum by (model_group, {DEPLOYMENT}) "
                           f"(increase(gatewatch_deployment_retries_total{{{DEP}}}[{RI}]))",
                           "{{model_id}} {{aws_account}}/{{aws_region}}")], "short", draw="bars"),
                ts("No deployments available", "Requests refused because every deployment of the group was "
                   "cooling down.",
                   [target(f'sum by (model_group) (increase(gatewatch_no_deployments_available_total'
                           f'{{{JOB}, model_group=~"$model_group"}}[{RI}]))', "{{model_group}}")], "short",
                   draw="bars"),
                ts("Fallbacks", "Requests recovered by (or failing after) a fallback to another model group.",
                   [target(f'sum by (requested_model, fallback_model) '
                           f'(increase(litellm_deployment_successful_fallbacks_total'
                           f'{{{JOB}, requested_model=~"$model_group"}}[{RI}]))',
                           "ok {{requested_model}} -> {{fallback_model}}"),
                    target(f'sum by (requested_model, fallback_model) '
                           f'(increase(litellm_deployment_failed_fallbacks_total'
                           f'{{{JOB}, requested_model=~"$model_group"}}[{RI}])) or vector(0)',
                           "failed {{requested_model}} -> {{fallback_model}}")], "short", draw="bars"),
            ]),
            Row("Quota", [
                ts("Remaining requests", "Provider x-ratelimit-remaining-requests, lowest per deployment.",
                   [target(f"min by ({DEPLOYMENT}) (litellm_remaining_requests_metric{{{DEP}}})",
                           "{{model_id}} {{aws_account}}/{{aws_region}}")], "short", min=0),
                ts("Remaining tokens", "Provider x-ratelimit-remaining-tokens, lowest per deployment.",
                   [target(f"min by ({DEPLOYMENT}) (litellm_remaining_tokens_metric{{{DEP}}})",
                           "{{model_id}} {{aws_account}}/{{aws_region}}")], "short", min=0),
                ts("RPM utilization", "Attempts per minute / the deployment's configured rpm (LiteLLM config).",
                   [target(f"sum by ({DEPLOYMENT}) (rate({total}[{RI}])) * 60 / on ({DEPLOYMENT}) "
                           f"max by ({DEPLOYMENT}) (litellm_deployment_rpm_limit{{{DEP}}})",
                           "{{model_id}} {{aws_account}}/{{aws_region}}")], "percentunit",
                   thresholds=RATIO_STEPS, min=0),
                ts("TPM utilization", "Tokens per minute / the deployment's configured tpm (LiteLLM config).",
                   [target(f"sum by ({DEPLOYMENT}) (rate(litellm_total_tokens_metric_total{{{DEP}}}[{RI}])) * 60"
                           f" / on ({DEPLOYMENT}) max by ({DEPLOYMENT}) (litellm_deployment_tpm_limit{{{DEP}}})",
                           "{{model_id}} {{aws_account}}/{{aws_region}}")], "percentunit",
                   thresholds=RATIO_STEPS, min=0),
            ]),
            Row("Bedrock quota headroom", [
                ts("Bedrock quota utilization",
                   "Use over the account/region/model quota read from Service Quotas: the highest fresh view "
                   "(the proxy's completed calls, its reservations of input + max_tokens, or AWS/Bedrock's "
                   "account-wide EstimatedTPMQuotaUsage), burndown applied. The rule BedrockQuotaHeadroomLow "
                   "pages above 80 %.",
                   [target(f"max by ({QUOTA_KEY}) (gatewatch_quota_utilization_ratio{{{QUOTA}}})",
                           "{{aws_account}}/{{aws_region}} {{model}} {{quota}} ({{inference}})")], "percentunit",
                   thresholds=RATIO_STEPS, min=0),
                ts("Utilization by view (tokens per minute)",
                   "The three views side by side: completed (proxy, real time), reserved (input + max_tokens at "
                   "request start), account (every caller of the account, a minute late).",
                   [target(f'max by (aws_account, aws_region, model, view) (gatewatch_quota_view_utilization_ratio'
                           f'{{{QUOTA}, quota="tokens_per_minute"}})',
                           "{{aws_account}}/{{aws_region}} {{model}} {{view}}")], "percentunit",
                   thresholds=RATIO_STEPS, min=0),
                ts("Headroom (tokens per minute)", "Quota minus the highest view's use: what is left this minute.",
                   [target(f'max by ({QUOTA_KEY}) (gatewatch_quota_limit{{{QUOTA}, quota="tokens_per_minute"}}) '
                           f'* on ({QUOTA_KEY}) (1 - clamp_max(max by ({QUOTA_KEY}) '
                           f'(gatewatch_quota_utilization_ratio{{{QUOTA}, quota="tokens_per_minute"}}), 1))',
                           "{{aws_account}}/{{aws_region}} {{model}} ({{inference}})")], "short", min=0),
                ts("Requests without max_tokens",
                   "Bedrock reserves the model's maximum output for these: the most common cause of surprise "
                   "throttling.",
                   [target(f"sum by (aws_account, aws_region, model) (increase("
                           f"gatewatch_quota_requests_without_max_tokens_total{{{QUOTA}}}[{RI}])) or vector(0)",
                           "{{aws_account}}/{{aws_region}} {{model}}")], "short", draw="bars"),
                ts("Account-wide throttles (AWS/Bedrock)",
                   "InvocationThrottles of every caller of the account, newest minute.",
                   [target(f"max by (aws_account, aws_region, model) (gatewatch_quota_account_throttles{{{QUOTA}}})"
                           f" or vector(0)", "{{aws_account}}/{{aws_region}} {{model}}")], "short"),
                ts("Quota limits", "Applied quota values (Service Quotas, refreshed hourly).",
                   [target(f"max by ({QUOTA_KEY}) (gatewatch_quota_limit{{{QUOTA}}})",
                           "{{aws_account}}/{{aws_region}} {{model}} {{quota}} ({{inference}})")], "short", min=0),
            ]),
        ])


def spend() -> Dashboard:
    rec = f"{R_SPEND}{{{DEP}}}"

    def window(by: str, days: str) -> str:
        grouping = f" by ({by})" if by else ""
        return f"sum{grouping} (sum_over_time({rec}[{days}]))"

    return Dashboard(
        "gatewatch-spend", "gatewatch / Spend",
        "Spend by team, key, model, account and region over the last day and 30 days, against reference "
        "budgets. Budget alerts with calendar periods come from gatewatch's budget rules.",
        [*scope_vars(), textbox_var("daily_budget_usd", "Daily budget (USD)", "100"),
         textbox_var("monthly_budget_usd", "Monthly budget (USD)", "3000")],
        [
            Row("Totals", [
                stat("Last 24 h", "USD spent in the last 24 hours.", window("", "1d"), "currencyUSD",
                     decimals=2),
                stat("Last 30 days", "USD spent in the last 30 days.", window("", "30d"), "currencyUSD",
                     decimals=2),
                Panel("gauge", "24 h vs daily budget", "Last 24 h spend / $daily_budget_usd.",
                      [target(f"{window('', '1d')} / $daily_budget_usd")], "percentunit", size=(4, 4),
                      thresholds=RATIO_STEPS, min=0, max=1),
                Panel("gauge", "30 days vs monthly budget", "Last 30 days spend / $monthly_budget_usd.",
                      [target(f"{window('', '30d')} / $monthly_budget_usd")], "percentunit", size=(4, 4),
                      thresholds=RATIO_STEPS, min=0, max=1),
                stat("Projected 30 days", "30 x the last 24 h: where the month lands at today's pace.",
                     f"{window('', '1d')} * 30", "currencyUSD", decimals=2),
                stat("Spend rate", "USD per hour right now.",
                     f"sum(rate(litellm_spend_metric_total{{{DEP}}}[{RI}])) * 3600", "currencyUSD", decimals=2),
            ]),
            Row("By team", [
                bars("Team: 24 h vs daily budget", "Last 24 h spend per team alias / $daily_budget_usd.",
                     f"{window('team_alias', '1d')} / $daily_budget_usd", "{{team_alias}}", "percentunit",
                     thresholds=RATIO_STEPS, min=0, max=1),
                bars("Team: 30 days vs monthly budget", "Last 30 days per team alias / $monthly_budget_usd.",
                     f"{window('team_alias', '30d')} / $monthly_budget_usd", "{{team_alias}}", "percentunit",
                     thresholds=RATIO_STEPS, min=0, max=1),
                ts("Spend rate by team", "USD per hour per team alias.",
                   [target(f"sum by (team_alias) (rate(litellm_spend_metric_total{{{DEP}}}[{RI}])) * 3600",
                           "{{team_alias}}")], "currencyUSD", size=(8, 8)),
            ]),
            Row("By key and model", [
                bars("Key: last 24 h", "USD per virtual key alias.", window("api_key_alias", "1d"),
                     "{{api_key_alias}}", "currencyUSD", decimals=2),
                bars("Key: last 30 days", "USD per virtual key alias.", window("api_key_alias", "30d"),
                     "{{api_key_alias}}", "currencyUSD", decimals=2),
                bars("Model group: last 30 days", "USD per model group.", window("model_group", "30d"),
                     "{{model_group}}", "currencyUSD", decimals=2),
                ts("Rolling 24 h spend by model group", "USD in the 24 hours before each point.",
                   [target(window("model_group", "1d"), "{{model_group}}")], "currencyUSD", size=(12, 8)),
                bars("Account and region: last 30 days", "USD per AWS account and region.",
                     window("aws_account, aws_region", "30d"), "{{aws_account}} {{aws_region}}", "currencyUSD",
                     size=(12, 8), decimals=2),
            ]),
            Row("gatewatch budget rules", [
                bars("Budget usage, current period", "Spend / limit per budget rule and key (rules/budget.yml: "
                     "day and month in the rule's timezone). Largest keys first; shared across tasks with the "
                     "Redis state backend.",
                     f"max by (rule, key, period) (gatewatch_budget_usage_ratio{{{JOB}}})",
                     "{{rule}} {{key}} ({{period}})",
                     "percentunit", size=(12, 8), thresholds=RATIO_STEPS, min=0, max=1),
                bars("Budget spend, current period", "USD spent so far in each budget rule's period and key.",
                     f"max by (rule, key, period) (gatewatch_budget_spend{{{JOB}}})", "{{rule}} {{key}} ({{period}})",
                     "currencyUSD", size=(12, 8), decimals=2),
            ]),
            Row("Tokens and LiteLLM budget alerts", [
                ts("Tokens / s by team", "Input + output tokens per team alias.",
                   [target(f"sum by (team_alias) (rate(litellm_total_tokens_metric_total{{{DEP}}}[{RI}]))",
                           "{{team_alias}}")], "short"),
                ts("LiteLLM budget and spend alerts", "Budget / spend webhooks received from the proxy.",
                   [target(f"sum by (alert_type) (increase(gatewatch_litellm_alerts_total{{{JOB}}}[{RI}]))",
                           "{{alert_type}}")], "short", draw="bars"),
            ]),
        ])


def alerts() -> Dashboard:
    active = f"max by (alertname, severity, state) (gatewatch_alerts{{{INST}}})"
    return Dashboard(
        "gatewatch-alerts", "gatewatch / Alerts",
        "gatewatch's own rule evaluation and alert delivery, and the alerts LiteLLM sent.",
        instance_vars(),
        [
            Row("Alerts", [
                stat("Firing", "Alert instances firing (the same alert seen by several tasks counts once).",
                     f'sum(max by (alertname, severity) (gatewatch_alerts{{{INST}, state="firing"}})) or vector(0)',
                     thresholds=thresholds(("green", None), ("red", 1))),
                stat("Pending", "Alert instances whose condition holds but not yet for `for`.",
                     f'sum(max by (alertname, severity) (gatewatch_alerts{{{INST}, state="pending"}})) or vector(0)',
                     thresholds=thresholds(("green", None), ("orange", 1))),
                stat("Dead letters", "Notifications given up after every retry.",
                     f"max(gatewatch_dead_letters{{{INST}}}) or vector(0)",
                     thresholds=thresholds(("green", None), ("red", 1))),
                stat("Outbox depth", "Notifications waiting for delivery.",
                     f"max(gatewatch_outbox_depth{{{INST}}})",
                     thresholds=thresholds(("green", None), ("orange", 10))),
                stat("Rules loaded", "Rules the engine evaluates (0 after a failed first load).",
                     f"min(gatewatch_rules_loaded{{{INST}}})", thresholds=thresholds(("red", None), ("green", 1))),
                stat("Last rule reload", "1 when the last rule (re)load worked on every instance.",
                     f"min(gatewatch_rules_last_reload_successful{{{INST}}})",
                     thresholds=thresholds(("red", None), ("green", 1)),
                     mappings=[{"type": "value", "options": {"0": {"text": "failed", "index": 0},
                                                             "1": {"text": "ok", "index": 1}}}]),
                Panel("table", "Alerts by name and state", "Alert instances per rule, severity and state.",
                      [target(active, instant=True, table=True)], "short", size=(24, 8),
                      transformations=[{"id": "organize", "options": {
                          "excludeByName": {"Time": True}, "renameByName": {"Value": "alerts"}, "indexByName": {}}}]),
                ts("Firing alerts by name", "Alert instances firing, per rule.",
                   [target(f'max by (alertname, severity) (gatewatch_alerts{{{INST}, state="firing"}})',
                           "{{alertname}} ({{severity}})")], "short",
                   stack=True),
                ts("Pending alerts by name", "Alert instances pending, per rule.",
                   [target(f'max by (alertname, severity) (gatewatch_alerts{{{INST}, state="pending"}})',
                           "{{alertname}} ({{severity}})")], "short",
                   stack=True),
            ]),
            Row("Rule evaluation", [
                ts("Evaluations / s", "Rule group evaluations per second.",
                   [target(f"sum by (group) (rate(gatewatch_rule_evaluations_total{{{INST}}}[{RI}]))",
                           "{{group}}")], "ops", size=(8, 8)),
                ts("Evaluation failures / s", "Rule group evaluations that raised.",
                   [target(f"sum by (group) (rate(gatewatch_rule_evaluation_failures_total{{{INST}}}[{RI}]))"
                           f" or vector(0)", "{{group}}")], "ops", size=(8, 8)),
                ts("Evaluation duration p99", "Time one evaluation of a rule group takes.",
                   [target(f"histogram_quantile(0.99, sum by (le, group) "
                           f"(rate(gatewatch_rule_evaluation_duration_seconds_bucket{{{INST}}}[{RI}])))",
                           "{{group}}")], "s", size=(8, 8)),
            ]),
            Row("Delivery", [
                ts("Notifications / s", "Notification attempts per receiver and outcome.",
                   [target(f"sum by (receiver, outcome) (rate(gatewatch_notifications_total{{{INST}}}[{RI}]))",
                           "{{receiver}} {{outcome}}")], "ops"),
                ts("Outbox", "Notifications waiting, and the age of the oldest one.",
                   [target(f"max(gatewatch_outbox_depth{{{INST}}})", "depth"),
                    target(f"max(gatewatch_outbox_oldest_age_seconds{{{INST}}})", "oldest age (s)"),
                    target(f"max(gatewatch_dead_letters{{{INST}}})", "dead letters")], "short"),
            ]),
            Row("From LiteLLM", [
                ts("LiteLLM alerts received", "Budget and spend webhooks from the proxy, by type.",
                   [target(f"sum by (alert_type) (increase(gatewatch_litellm_alerts_total{{{INST}}}[{RI}]))",
                           "{{alert_type}}")], "short", draw="bars"),
                ts("Proxy errors reported", "Errors from the proxy's alert messages and logs, by class and source.",
                   [target(f"sum by (error_class, source) (increase(gatewatch_proxy_errors_total{{{INST}}}[{RI}]))",
                           "{{source}} {{error_class}}")], "short", draw="bars"),
            ]),
        ], time_from="now-24h")


def self_health() -> Dashboard:
    return Dashboard(
        "gatewatch-self", "gatewatch / Self health",
        "Is the sidecar keeping up: ingest, rejects, log tail lag, health polling, exporters, outbox, process.",
        instance_vars(),
        [
            Row("Status", [
                stat("Ready tasks", "gatewatch instances whose pipeline is started and config loaded.",
                     f"sum(gatewatch_ready{{{INST}}})", thresholds=thresholds(("red", None), ("green", 1))),
                stat("Uptime", "Since the youngest instance started.",
                     f"time() - max(process_start_time_seconds{{{INST}}})", "s"),
                stat("Catalog deployments", "Deployments known from the LiteLLM config / model info.",
                     f"max(gatewatch_catalog_deployments{{{INST}}})"),
                stat("Held failed attempts", "Failures waiting for a retry/fallback success (merge window).",
                     f"sum(gatewatch_pending_failed_requests{{{INST}}})"),
                stat("Unattributed events / s", "Events whose deployment has no known account or region.",
                     f"sum(rate(gatewatch_unattributed_events_total{{{INST}}}[{RI}])) or vector(0)", "ops",
                     thresholds=thresholds(("green", None), ("orange", 0.001))),
                stat("Rejected items / s", "Callback items or alert bodies that could not be used.",
                     f"sum(rate(gatewatch_events_rejected_total{{{INST}}}[{RI}])) or vector(0)", "ops",
                     thresholds=thresholds(("green", None), ("orange", 0.001))),
            ]),
            Row("Ingest", [
                ts("Events / s by source", "Events accepted into the pipeline.",
                   [target(f"sum by (source) (rate(gatewatch_events_received_total{{{INST}}}[{RI}]))",
                           "{{source}}")], "ops"),
                ts("Rejects / s by reason", "Counted and skipped, never a failed batch.",
                   [target(f"sum by (source, reason) (rate(gatewatch_events_rejected_total{{{INST}}}[{RI}]))"
                           f" or vector(0)", "{{source}} {{reason}}")], "ops"),
                ts("Ingest requests / s", "HTTP ingest requests by route and status code.",
                   [target(f"sum by (route, code) (rate(gatewatch_ingest_requests_total{{{INST}}}[{RI}]))",
                           "{{route}} {{code}}")], "reqps"),
                ts("Batch size", "Items per generic_api POST (LiteLLM sends up to 512).",
                   [target(f"histogram_quantile({q}, sum by (le) "
                           f"(rate(gatewatch_ingest_batch_size_bucket{{{INST}}}[{RI}])))", f"p{round(q * 100)}")
                    for q in (0.5, 0.95)], "short"),
                ts("Unattributed events / s", "Per deployment: add it to the catalog or to attribution.",
                   [target(f"sum by (deployment, model_group) "
                           f"(rate(gatewatch_unattributed_events_total{{{INST}}}[{RI}]))",
                           "{{model_group}} {{deployment}}")], "ops"),
                ts("Series overflow and sink errors", "Label sets folded into __overflow__; failed sink batches.",
                   [target(f"sum by (metric) (rate(gatewatch_series_overflow_total{{{INST}}}[{RI}])) or vector(0)",
                           "overflow {{metric}}"),
                    target(f"sum by (sink) (rate(gatewatch_sink_errors_total{{{INST}}}[{RI}])) or vector(0)",
                           "sink error {{sink}}")], "ops"),
            ]),
            Row("Log tail and health polling", [
                ts("Tail lag", "Bytes written to the proxy log and not read yet.",
                   [target(f"max by (instance) (gatewatch_tail_lag_bytes{{{INST}}})", "{{instance}}")], "bytes",
                   size=(8, 8)),
                ts("Log lines / s", "Read, not parseable as JSON, and cut at the line limit.",
                   [target(f"sum(rate(gatewatch_tail_lines_read_total{{{INST}}}[{RI}]))", "read"),
                    target(f"sum(rate(gatewatch_tail_lines_unparsed_total{{{INST}}}[{RI}]))", "unparsed"),
                    target(f"sum(rate(gatewatch_tail_lines_truncated_total{{{INST}}}[{RI}]))", "truncated")],
                   "ops", size=(8, 8)),
                ts("Rotations and checkpoint age", "Log rotations followed; age of the last saved position.",
                   [target(f"sum(increase(gatewatch_tail_rotations_total{{{INST}}}[{RI}]))", "rotations"),
                    target(f"max(gatewatch_tail_checkpoint_age_seconds{{{INST}}})", "checkpoint age (s)")],
                   "short", size=(8, 8)),
                ts("Health polls / s", "Proxy health endpoint polls by endpoint and outcome.",
                   [target(f"sum by (endpoint, outcome) (rate(gatewatch_health_poll_total{{{INST}}}[{RI}]))",
                           "{{endpoint}} {{outcome}}")], "ops"),
                ts("Proxy endpoints up", "1 when the endpoint answered OK on the last poll.",
                   [target(f"min by (endpoint) (gatewatch_proxy_up{{{INST}}})", "{{endpoint}}")], "short", min=0),
            ]),
            Row("Exporters and outbox", [
                ts("OpenTelemetry", "Spans exported and dropped, export failures, queue size.",
                   [target(f"sum(rate(gatewatch_otel_spans_exported_total{{{INST}}}[{RI}]))", "exported / s"),
                    target(f"sum by (reason) (rate(gatewatch_otel_spans_dropped_total{{{INST}}}[{RI}]))"
                           f" or vector(0)", "dropped / s {{reason}}"),
                    target(f"sum(rate(gatewatch_otel_export_failures_total{{{INST}}}[{RI}]))",
                           "export failures / s"),
                    target(f"max(gatewatch_otel_queue_size{{{INST}}})", "queue")], "short", size=(8, 8)),
                ts("CloudWatch", "Datapoints sent (EMF or PutMetricData), drops, failed puts, pending batches.",
                   [target(f"sum by (mode) (rate(gatewatch_cloudwatch_datapoints_total{{{INST}}}[{RI}]))",
                           "datapoints / s {{mode}}"),
                    target(f"sum by (reason) (rate(gatewatch_cloudwatch_dropped_total{{{INST}}}[{RI}]))"
                           f" or vector(0)", "dropped / s {{reason}}"),
                    target(f"sum(rate(gatewatch_cloudwatch_put_failures_total{{{INST}}}[{RI}]))",
                           "put failures / s"),
                    target(f"max(gatewatch_cloudwatch_pending_batches{{{INST}}})", "pending batches")],
                   "short", size=(8, 8)),
                ts("Alert outbox", "Notifications waiting, oldest age, dead letters.",
                   [target(f"max(gatewatch_outbox_depth{{{INST}}})", "depth"),
                    target(f"max(gatewatch_outbox_oldest_age_seconds{{{INST}}})", "oldest age (s)"),
                    target(f"max(gatewatch_dead_letters{{{INST}}})", "dead letters")], "short", size=(8, 8)),
            ]),
            Row("Process", [
                ts("Resident memory", "RSS per instance (budget: 150 MiB at 20,000 series).",
                   [target(f"max by (instance) (process_resident_memory_bytes{{{INST}}})", "{{instance}}")],
                   "bytes", size=(8, 8)),
                ts("CPU", "Cores used per instance.",
                   [target(f"sum by (instance) (rate(process_cpu_seconds_total{{{INST}}}[{RI}]))", "{{instance}}")],
                   "short", size=(8, 8)),
                ts("Catalog reloads", "Deployment catalog loads by source and outcome.",
                   [target(f"sum by (source, outcome) (increase(gatewatch_catalog_reloads_total{{{INST}}}[{RI}]))",
                           "{{source}} {{outcome}}")], "short", size=(8, 8), draw="bars"),
            ]),
        ], time_from="now-3h")


DASHBOARDS = {
    "gatewatch-overview.json": overview,
    "gatewatch-deployments.json": deployments,
    "gatewatch-spend.json": spend,
    "gatewatch-alerts.json": alerts,
    "gatewatch-self.json": self_health,
}


def render_all() -> dict[str, str]:
    """File name -> JSON text, exactly as committed."""
    return {name: json.dumps(build().render(), indent=2, ensure_ascii=False) + "\n"
            for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed dashboard is out of date")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    stale = []
    for name, text in render_all().items():
        path = args.out / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print("out of date (run python dashboards/build.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
