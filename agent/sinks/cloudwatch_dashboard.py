"""A CloudWatch dashboard body for the metrics the CloudWatch sink publishes.

Widgets use SEARCH expressions over exact dimension sets (`{"LiteLLM",ModelGroup}`), so
new model groups, deployments, accounts and regions show up without editing the
dashboard. A widget is only included when its dimension set is published.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.sinks.config import DEFAULT_DIMENSION_SETS

# (title, [(metric, statistic)], dimension sets to draw it from, first published one wins)
_WIDGETS: list[tuple[str, list[tuple[str, str]], list[tuple[str, ...]]]] = [
    ("Requests by model group", [("Requests", "Sum")], [("ModelGroup",)]),
    ("Errors by model group", [("Errors", "Sum")], [("ModelGroup",)]),
    ("Rate limited (429 / throttling) by account and region", [("RateLimited", "Sum")],
     [("ModelGroup", "AwsAccount", "AwsRegion"), ("AwsAccount", "AwsRegion")]),
    ("Latency p95 (ms) by model group", [("Latency", "p95")], [("ModelGroup",)]),
    ("Latency p99 (ms) by deployment", [("Latency", "p99")], [("ModelGroup", "Deployment"), ("Deployment",)]),
    ("Time to first token p95 (ms) by model group", [("TTFT", "p95")], [("ModelGroup",)]),
    ("Tokens by model group", [("InputTokens", "Sum"), ("OutputTokens", "Sum")], [("ModelGroup",)]),
    ("Cost (USD) by model group", [("CostUSD", "Sum")], [("ModelGroup",)]),
    ("Cost (USD) by account and region", [("CostUSD", "Sum")],
     [("ModelGroup", "AwsAccount", "AwsRegion"), ("AwsAccount", "AwsRegion")]),
    ("Errors by deployment", [("Errors", "Sum")], [("ModelGroup", "Deployment"), ("Deployment",)]),
    ("Cooldowns by deployment", [("Cooldowns", "Sum")], [("ModelGroup", "Deployment"), ("Deployment",)]),
    ("Retries by deployment", [("Retries", "Sum")], [("ModelGroup", "Deployment"), ("Deployment",)]),
    ("Requests by provider", [("Requests", "Sum")], [("Provider",)]),
    ("Latency p95 (ms) by account and region", [("Latency", "p95")],
     [("ModelGroup", "AwsAccount", "AwsRegion"), ("AwsAccount", "AwsRegion")]),
]
# Bedrock quota headroom (agent/quotas), published with one fixed dimension set when `quotas.enabled`
QUOTA_DIMS = ("AwsAccount", "AwsRegion", "Model", "Quota", "Inference")
_QUOTA_WIDGETS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Bedrock quota utilization (highest fresh view)", [("QuotaUtilization", "Maximum")]),
    ("Bedrock quota utilization by view", [("QuotaUtilizationCompleted", "Maximum"),
                                           ("QuotaUtilizationReserved", "Maximum"),
                                           ("QuotaUtilizationAccount", "Maximum")]),
    ("Bedrock quota limits (Service Quotas)", [("QuotaLimit", "Maximum")]),
]
WIDTH, HEIGHT = 12, 6


def _search(namespace: str, dims: tuple[str, ...], metric: str, stat: str, period: int) -> str:
    schema = ",".join([f'"{namespace}"', *dims])
    return f"SEARCH('{{{schema}}} MetricName=\"{metric}\"', '{stat}', {period})"


def _pick(preferred: list[tuple[str, ...]], published: list[tuple[str, ...]]) -> tuple[str, ...] | None:
    for dims in preferred:
        if dims in published:
            return dims
    return None


def dashboard_body(namespace: str = "LiteLLM", region: str = "us-east-1",
                   dimension_sets: Sequence[Sequence[str]] | None = None, period: int = 60,
                   quotas: bool = False) -> dict[str, Any]:
    sets = dimension_sets if dimension_sets is not None else DEFAULT_DIMENSION_SETS
    published: list[tuple[str, ...]] = [tuple(s) for s in sets]
    widgets: list[dict[str, Any]] = [{
        "type": "text", "x": 0, "y": 0, "width": 24, "height": 2,
        "properties": {"markdown": f"## LiteLLM through gatewatch (namespace `{namespace}`)\n"
                                   "Per model group, deployment, AWS account and region. Latency and TTFT are of "
                                   "successful attempts; Requests and Errors count LLM API attempts."},
    }]
    index = 0
    quota_dims: list[tuple[str, ...]] = [QUOTA_DIMS]
    quota_widgets = [(title, metrics, quota_dims) for title, metrics in _QUOTA_WIDGETS] if quotas else []
    for title, metrics, preferred in _WIDGETS + quota_widgets:
        dims = QUOTA_DIMS if preferred is quota_dims else _pick(preferred, published)
        if dims is None:
            continue
        lines = []
        for n, (metric, stat) in enumerate(metrics, start=1):
            line: dict[str, Any] = {"expression": _search(namespace, dims, metric, stat, period), "id": f"e{n}",
                                    "period": period}
            if len(metrics) > 1:
                line["label"] = metric
            lines.append([line])
        widgets.append({
            "type": "metric",
            "x": (index % 2) * WIDTH,
            "y": 2 + (index // 2) * HEIGHT,
            "width": WIDTH,
            "height": HEIGHT,
            "properties": {"title": title, "view": "timeSeries", "stacked": False, "region": region,
                           "period": period, "metrics": lines, "yAxis": {"left": {"min": 0}}},
        })
        index += 1
    return {"start": "-PT6H", "periodOverride": "inherit", "widgets": widgets}
