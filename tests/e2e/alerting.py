"""gatewatch config for the alerting part of the e2e run: the default rule pack (tuned by a
values file, see rules_values.yml) and one webhook receiver on 127.0.0.1.

The rule engine and alert delivery are separate features; when this checkout lacks them
the alerting phase and its test are skipped (the test says why).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from tests.e2e.receiver import Received

HERE = Path(__file__).resolve().parent
VALUES_FILE = HERE / "rules_values.yml"
REQUIRED_MODULES = ("agent.rules.engine", "agent.alerts.service")

# what the alerting phase provokes and must see fire, then resolve: alert -> identifying labels
EXPECTED_ALERTS: dict[str, dict[str, str]] = {
    "AccountRegionThrottled": {"api_provider": "openai", "aws_account": "888888888888", "aws_region": "eu-north-1"},
    "DeploymentErrorRatioHigh": {"deployment": "error-nofallback-acct777-use2", "aws_account": "777777777777",
                                 "aws_region": "us-east-2"},
    "DeploymentSlowP95": {"deployment": "slow-model-acct777-use2", "aws_account": "777777777777",
                          "aws_region": "us-east-2"},
}


def available() -> bool:
    try:
        return all(importlib.util.find_spec(name) is not None for name in REQUIRED_MODULES)
    except ModuleNotFoundError:
        return False


def gatewatch_alerting_config(receiver_url: str) -> dict[str, Any]:
    """Config additions that turn on the default rules and a webhook receiver, or {}."""
    if not available():
        return {}
    return {
        "rule_engine": {"values": [str(VALUES_FILE)]},
        "notify": {
            "receivers": [{"name": "e2e-webhook", "webhook": {"url": receiver_url}}],
            "route": {"receiver": "e2e-webhook", "group_by": ["..."], "group_wait": "0s",
                      "group_interval": "1s", "repeat_interval": "1h"},
        },
    }


def notifications(received: list[Received], since: float = 0.0) -> list[tuple[float, str, dict[str, str]]]:
    """(time, status, labels) of every alert in every Alertmanager-v4 webhook body received since `since`."""
    out = []
    for item in received:
        body = item.json()
        if item.time < since or not isinstance(body, dict):
            continue
        for alert in body.get("alerts") or []:
            labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
            out.append((item.time, str(alert.get("status")), labels))
    return out


def first_seen(received: list[Received], alertname: str, labels: dict[str, str], status: str,
               since: float = 0.0) -> float | None:
    """When the receiver first got `alertname` with these labels in this status (after `since`)."""
    for when, got_status, got in notifications(received, since):
        if got_status == status and got.get("alertname") == alertname and all(got.get(k) == v
                                                                              for k, v in labels.items()):
            return when
    return None
