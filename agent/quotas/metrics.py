"""Prometheus view of the quota service, read at scrape time (a custom Collector).

- gatewatch_quota_limit{aws_account, aws_region, model, quota, inference}: the applied quota value
- gatewatch_quota_utilization_ratio{...}: use over the quota, the highest fresh view
- gatewatch_quota_view_utilization_ratio{..., view}: each view on its own (completed, reserved, account)
- gatewatch_quota_usage{..., view}: tokens or requests over the quota's period, burndown applied
- gatewatch_quota_requests_without_max_tokens_total{aws_account, aws_region, model, inference}
- gatewatch_quota_account_throttles{aws_account, aws_region, model}: InvocationThrottles in the newest minute
- gatewatch_quota_unmatched{deployment, model, aws_account, aws_region}: 1 per Bedrock deployment without a quota
- gatewatch_quota_api_calls_total{api, outcome}, gatewatch_quota_api_throttled_total{api}
- gatewatch_quota_last_refresh_timestamp_seconds{aws_account, aws_region}
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agent.quotas.service import QuotaService

LABELS = ["aws_account", "aws_region", "model", "quota", "inference"]


class QuotaCollector(Collector):
    """Reads the service's last evaluation; registered once per app."""

    def __init__(self, service: QuotaService) -> None:
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        # runs on the /metrics render thread while the event loop updates the service: every
        # dict is copied with list() (atomic under the GIL) before it is walked
        s = self.service
        limit = GaugeMetricFamily("gatewatch_quota_limit", "Applied Bedrock quota (Service Quotas).", labels=LABELS)
        util = GaugeMetricFamily("gatewatch_quota_utilization_ratio",
                                 "Use over the quota: the highest fresh view (see view label of the per-view gauge).",
                                 labels=LABELS)
        per_view = GaugeMetricFamily("gatewatch_quota_view_utilization_ratio",
                                     "Use over the quota per view: completed, reserved, account.",
                                     labels=[*LABELS, "view"])
        usage = GaugeMetricFamily("gatewatch_quota_usage",
                                  "Tokens or requests over the quota's period (burndown applied), per view.",
                                  labels=[*LABELS, "view"])
        for row in s.rows:
            labels = list(row.labels)
            limit.add_metric(labels, row.matched.value)
            util.add_metric(labels, row.utilization)
            for view, value in row.view_utilization.items():
                per_view.add_metric([*labels, view], value)
            for view, value in row.use.items():
                usage.add_metric([*labels, view], value)
        yield from (limit, util, per_view, usage)
        no_max = CounterMetricFamily("gatewatch_quota_requests_without_max_tokens",
                                     "Bedrock requests sent without max_tokens (Bedrock reserves the model's "
                                     "maximum output for them).", labels=["aws_account", "aws_region", "model",
                                                                          "inference"])
        for key, count in list(s.recorder.without_max_tokens.items()):  # copied: the loop adds keys
            no_max.add_metric(key.split("|")[:4], count)
        yield no_max
        throttles = GaugeMetricFamily("gatewatch_quota_account_throttles",
                                      "AWS/Bedrock InvocationThrottles in the newest minute (every caller of the "
                                      "account).", labels=["aws_account", "aws_region", "model"])
        for (account, region), models in list(s.account_use.items()):
            for model, use in list(models.items()):
                if use.throttles is not None:
                    throttles.add_metric([account, region, model], use.throttles)
        yield throttles
        unmatched = GaugeMetricFamily("gatewatch_quota_unmatched", "Bedrock deployments whose quota is not known.",
                                      labels=["deployment", "model", "aws_account", "aws_region"])
        for u in s.unmatched:
            unmatched.add_metric([u.deployment, u.model, u.aws_account, u.aws_region], 1.0)
        yield unmatched
        calls = CounterMetricFamily("gatewatch_quota_api_calls", "Service Quotas / CloudWatch reads.",
                                    labels=["api", "outcome"])
        for (api, outcome), count in list(s.calls.items()):
            calls.add_metric([api, outcome], count)
        yield calls
        throttled = CounterMetricFamily("gatewatch_quota_api_throttled",
                                        "Throttled attempts of the quota reads (retried by botocore).",
                                        labels=["api"])
        for api, count in list(s.throttled.items()):
            throttled.add_metric([api], count)
        yield throttled
        refreshed = GaugeMetricFamily("gatewatch_quota_last_refresh_timestamp_seconds",
                                      "When Service Quotas was last read successfully.",
                                      labels=["aws_account", "aws_region"])
        for (account, region), stamp in list(s.refreshed_at.items()):
            refreshed.add_metric([account, region], stamp)
        yield refreshed
