"""Rule alerts in the console and the API v2: pending and firing from the rule engine, with the
unit of their value, silenced state from the same silences amtool sees."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.alerts_v2_support import TOKEN, Api, notify_config
from tests.conftest import FIXTURES, load_capture
from tests.notify_support import until


def shifted_to_now(capture: str) -> list[dict[str, Any]]:
    """A capture's items with their times moved to now (rule windows only look back 7 days)."""
    items = load_capture(capture)["body_json"]
    delta = time.time() - max(i["endTime"] for i in items)
    for item in items:
        for key in ("startTime", "endTime", "completionStartTime"):
            if isinstance(item.get(key), (int, float)):
                item[key] += delta
    return items


async def test_pending_and_firing_rule_alerts_with_units(gatewatch_server: Any, tmp_path: Path,
                                                         lab_environ: Any) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(textwrap.dedent("""\
        groups:
          - name: console
            interval: 200ms
            rules:
              - alert: OutageErrorsSeen
                signal: errors
                over: 10m
                by: [deployment]
                above: 5
                labels: {severity: critical}
                annotations: {summary: "{{ value }} errors on {{ labels.deployment }}",
                              runbook_url: "https://runbooks.example.com/outage"}
              - alert: OutageErrorRatio
                signal: errors
                aggregate: ratio
                over: 10m
                by: [deployment]
                above: 0.5
                for: 1h
        """))
    config = notify_config(tmp_path)
    config.update(rules=[str(rules)], litellm={"config": str(FIXTURES / "config.yaml")},
                  attribution={"ecs_metadata": False})
    _gw, base = await gatewatch_server(config)
    api = Api(base)
    body = json.dumps(shifted_to_now("generic_api_outage.json"))
    async with aiohttp.ClientSession() as s, s.post(base + "/v1/litellm/events", data=body, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}) as r:
        assert r.status == 200

    async def both() -> list[dict[str, Any]]:
        items = (await api.call("GET", "/api/v1/console/alerts"))[1]["alerts"]
        return items if {a["state"] for a in items} == {"firing", "pending"} else []

    items = await until(both, limit=30, what="a firing and a pending rule alert")
    firing = next(a for a in items if a["state"] == "firing")
    pending = next(a for a in items if a["state"] == "pending")
    assert firing["labels"]["alertname"] == "OutageErrorsSeen" and firing["value"] == 6
    assert firing["unit"] == "events" and firing["runbookURL"] == "https://runbooks.example.com/outage"
    assert firing["receivers"] == ["oncall"] and firing["source"] == "rule console/OutageErrorsSeen"
    assert pending["labels"]["alertname"] == "OutageErrorRatio" and pending["unit"] == "ratio"
    assert pending["value"] == 1.0

    # the firing one reached the API v2 (through the alert store), the pending one did not
    _, v2 = await api.call("GET", "/api/v2/alerts")
    assert [a["labels"]["alertname"] for a in v2] == ["OutageErrorsSeen"]
    status, made = await api.call("POST", "/api/v2/silences", {
        "matchers": ["alertname=OutageErrorsSeen"], "duration": "1h", "comment": "known", "createdBy": "t"})
    assert status == 200
    items = (await api.call("GET", "/api/v1/console/alerts"))[1]["alerts"]
    firing = next(a for a in items if a["labels"]["alertname"] == "OutageErrorsSeen")
    assert firing["muted"] and firing["silencedBy"] == [made["silenceID"]]
