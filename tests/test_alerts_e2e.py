"""End to end: a real LiteLLM 429 storm -> rule fires -> webhook receiver pages -> traffic recovers -> resolved.

The generic_api capture of the `no_deployments` scenario (every gpt-lab deployment
answering 429) is posted to a running gatewatch (timestamps moved to now, since rule
windows use event time). A small inline rule counts rate-limited calls per deployment;
the notification reaching the receiver process must carry model_group, deployment and
the aws_account / aws_region the catalog (the lab's config.yaml) attributes. Then
successful traffic only: the window empties, the rule resolves, a resolved
notification follows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.alert import fingerprint
from tests.conftest import FIXTURES, load_capture
from tests.notify_support import ReceiverProcess, fixture_rate_limited_alerts, until

pytestmark = pytest.mark.integration

RULES = """
groups:
  - name: e2e
    interval: 200ms
    rules:
      - alert: DeploymentRateLimited
        signal: rate_limited
        aggregate: count
        over: 3s
        by: [model_group, deployment, aws_account, aws_region]
        above: 0
        for: 0s
        labels: {severity: critical}
        annotations:
          summary: >-
            {{ value }} rate-limited calls on {{ labels.deployment }}
            in {{ labels.aws_account }}/{{ labels.aws_region }}
          runbook_url: https://runbooks.example.com/rate-limits
"""


@pytest.fixture
def receiver() -> Iterator[ReceiverProcess]:
    process = ReceiverProcess()
    yield process
    process.close()


def retimed(capture: str) -> bytes:
    """The capture's items with their times moved so the last one ended just now."""
    items: list[dict[str, Any]] = load_capture(capture)["body_json"]
    shift = time.time() - max(float(i["endTime"]) for i in items)
    for item in items:
        for key in ("startTime", "endTime", "completionStartTime"):
            if isinstance(item.get(key), (int, float)):
                item[key] = float(item[key]) + shift
    return json.dumps(items).encode()


async def post(base: str, body: bytes) -> None:
    async with aiohttp.ClientSession() as session, session.post(
            base + "/v1/litellm/events", data=body, headers={"Content-Type": "application/json"}) as response:
        assert response.status == 200, await response.text()


async def test_429_storm_pages_with_attribution_then_resolves(gatewatch_server: Any, receiver: ReceiverProcess,
                                                             lab_environ: dict[str, str], tmp_path: Path) -> None:
    rules = tmp_path / "e2e.yml"
    rules.write_text(RULES)
    expected = {a.fingerprint: a for a in fixture_rate_limited_alerts()}
    assert len(expected) == 3  # three gpt-lab deployments, three accounts/regions

    _gw, base = await gatewatch_server({
        "litellm": {"config": str(FIXTURES / "config.yaml")},
        "attribution": {"ecs_metadata": False},
        "rules": [str(rules)],
        "notify": {
            "receivers": [{"name": "oncall", "webhook": {"url": receiver.url("/alertmanager")}}],
            "route": {"receiver": "oncall", "group_by": ["alertname", "model_group"], "group_wait": "500ms",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "outbox": {"initial_backoff": "100ms", "max_backoff": "500ms"},
        },
    })
    await post(base, retimed("generic_api_no_deployments.json"))

    pages = await until(receiver.accepted, limit=30, what="the firing notification")
    firing = pages[0]["body"]
    assert firing["version"] == "4" and firing["status"] == "firing" and firing["receiver"] == "oncall"
    assert firing["groupLabels"] == {"alertname": "DeploymentRateLimited", "model_group": "gpt-lab"}
    got = {}
    for item in firing["alerts"]:
        labels = item["labels"]
        got[fingerprint({k: v for k, v in labels.items()})] = item
    assert {fp: (i["labels"]["deployment"], i["labels"]["aws_account"], i["labels"]["aws_region"], i["value"])
            for fp, i in got.items()} == {
        fp: (a.labels["deployment"], a.labels["aws_account"], a.labels["aws_region"], a.value)
        for fp, a in expected.items()}
    assert all(i["labels"]["model_group"] == "gpt-lab" and i["status"] == "firing" for i in got.values())
    assert firing["commonAnnotations"]["runbook_url"] == "https://runbooks.example.com/rate-limits"

    # traffic recovers: only successful calls from now on; the 3s window empties and the rule resolves
    # (the deployments may resolve in different evaluations, so in one or several notifications)
    async def all_resolved() -> list[dict[str, Any]] | None:
        await post(base, retimed("generic_api_success.json"))
        pages = await receiver.accepted()
        done = {fingerprint(i["labels"]) for p in pages[1:] for i in p["body"]["alerts"] if i["status"] == "resolved"}
        return pages if done == set(expected) and pages[-1]["body"]["status"] == "resolved" else None

    pages = await until(all_resolved, limit=30, interval=0.5, what="every alert resolved")
    resolved = [i for p in pages[1:] for i in p["body"]["alerts"] if i["status"] == "resolved"]
    assert len(resolved) == len(expected)  # each resolve told once
    assert all(i["endsAt"] > i["startsAt"] for i in resolved)
    ids = [p["headers"]["X-Gatewatch-Notification-Id"] for p in pages]
    assert len(ids) == len(set(ids)) <= 1 + len(expected)  # nothing repeated
