"""Account-wide use of a model's quota, from the `AWS/Bedrock` CloudWatch metrics.

Bedrock's own metrics count every caller of the account's quota, other applications
included, which the proxy's callbacks never see; they arrive a minute or more late and
show no reservations. One GetMetricData call per account and region reads, per model,
the last minutes of `EstimatedTPMQuotaUsage` (TPM use with cache writes and burndown
applied), `InvocationThrottles` and `Invocations`. Blocking: run in an executor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.quotas.credentials import CredentialSource, SessionCache
from agent.quotas.servicequotas import botocore_config, count_throttles

METRICS = {"tpm": "EstimatedTPMQuotaUsage", "throttles": "InvocationThrottles", "invocations": "Invocations"}
LOOKBACK = 600.0  # read this far back: the metrics arrive a minute or more late


@dataclass
class AccountUse:
    """The newest per-minute datapoints of one model in one account and region (None: no data)."""

    tpm: float | None = None
    tpm_time: float | None = None
    throttles: float | None = None
    invocations: float | None = None
    invocations_time: float | None = None


def read_account_use(sessions: SessionCache, source: CredentialSource, region: str, model_ids: Sequence[str],
                     now: float, max_attempts: int, on_throttle: Callable[[], None] = lambda: None
                     ) -> dict[str, AccountUse]:
    """model id (as invoked, e.g. us.anthropic...) -> its newest account-wide datapoints."""
    config = botocore_config(max_attempts)
    client = sessions.session(source, region, config).client("cloudwatch", config=config)
    count_throttles(client, on_throttle)
    queries: list[dict[str, Any]] = []
    index: dict[str, tuple[str, str]] = {}
    for i, model in enumerate(model_ids):
        for short, metric in METRICS.items():
            qid = f"m{i}_{short}"
            index[qid] = (model, short)
            queries.append({"Id": qid, "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": "AWS/Bedrock", "MetricName": metric,
                           "Dimensions": [{"Name": "ModelId", "Value": model}]},
                "Period": 60, "Stat": "Sum"}})
    out = {m: AccountUse() for m in model_ids}
    if not queries:
        return out
    start = datetime.fromtimestamp(now - LOOKBACK, UTC)
    end = datetime.fromtimestamp(now + 60, UTC)
    for chunk in range(0, len(queries), 500):  # GetMetricData takes 500 queries a call
        kwargs: dict[str, Any] = {"MetricDataQueries": queries[chunk:chunk + 500], "StartTime": start,
                                  "EndTime": end, "ScanBy": "TimestampDescending"}
        while True:
            page = client.get_metric_data(**kwargs)
            for result in page.get("MetricDataResults", []):
                model, short = index.get(result.get("Id", ""), ("", ""))
                if not model or not result.get("Values"):
                    continue
                pairs = sorted(zip(result["Timestamps"], result["Values"], strict=False), key=lambda p: p[0],
                               reverse=True)
                stamp, value = pairs[0][0].timestamp(), float(pairs[0][1])
                use = out[model]
                if short == "tpm" and (use.tpm_time is None or stamp > use.tpm_time):
                    use.tpm, use.tpm_time = value, stamp
                elif short == "throttles":
                    use.throttles = value
                elif short == "invocations" and (use.invocations_time is None or stamp > use.invocations_time):
                    use.invocations, use.invocations_time = value, stamp
            token = page.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
    return out
