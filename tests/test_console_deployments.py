"""The Deployments page's numbers: replayed LiteLLM captures through the real parser and catalog."""

from __future__ import annotations

import json
from typing import Any

from agent.console.deployments import DeploymentStats
from agent.enrich import Enricher, catalog_from_config_text
from agent.events import Event, Kind
from agent.parse.litellm import decode_body
from tests.conftest import FIXTURES, load_capture
from tests.notify_support import FakeClock


def replay(stats: DeploymentStats, capture: str) -> list[Event]:
    enricher = Enricher(stats.catalog)
    events = decode_body(json.dumps(load_capture(capture)["body_json"]).encode()).events
    for event in events:
        enricher.enrich(event)
    stats.handle(events)
    return events


def row(snapshot: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    return next(d for g in snapshot for d in g["deployments"] if d["id"] == deployment)


def test_rates_ratios_and_sparkline_from_a_capture(lab_environ: Any) -> None:
    clock = FakeClock()
    stats = DeploymentStats(catalog_from_config_text((FIXTURES / "config.yaml").read_text()), clock=clock)
    events = replay(stats, "generic_api_upstream_429.json")
    mine = [e for e in events if e.kind == Kind.REQUEST and e.deployment == "ratelimited-model-d"]
    assert mine, "the capture has calls to ratelimited-model-d"
    snap = stats.snapshot()
    got = row(snap, "ratelimited-model-d")
    assert got["requests"] == len(mine)
    assert got["rate_limited_ratio"] == round(sum(e.rate_limited for e in mine) / len(mine), 4)
    assert got["error_ratio"] == round(sum(e.status != "success" for e in mine) / len(mine), 4)
    assert got["requests_per_second"] == round(len(mine) / 300.0, 4)
    assert got["sparkline"][-1] == len(mine) and sum(got["sparkline"]) == len(mine)
    # idle catalog deployments are listed with their account and region
    idle = row(snap, "bedrock-acct555-apse2")
    assert (idle["aws_account"], idle["aws_region"], idle["state"]) == ("555555555555", "ap-southeast-2", "no data")
    # ten minutes later the 5-minute rates are empty, the hour's sparkline still has them
    clock.advance(600)
    later = row(stats.snapshot(), "ratelimited-model-d")
    assert later["requests"] == 0 and later["error_ratio"] is None
    assert later["sparkline"][-11] == len(mine)
    clock.advance(3600)
    assert sum(row(stats.snapshot(), "ratelimited-model-d")["sparkline"]) == 0


def test_latency_spend_cooldown_and_headroom(lab_environ: Any) -> None:
    clock = FakeClock()
    stats = DeploymentStats(catalog_from_config_text((FIXTURES / "config.yaml").read_text()), clock=clock)
    events = replay(stats, "generic_api_success.json")
    ok = [e for e in events if e.kind == Kind.REQUEST and e.deployment == "gpt-lab-acct111-use1"
          and e.status == "success"]
    assert ok
    got = row(stats.snapshot(), "gpt-lab-acct111-use1")
    assert got["spend_today"] == round(sum(e.cost_usd for e in ok), 6)
    assert got["p95_latency_seconds"] is not None and got["p95_latency_seconds"] >= sorted(
        e.latency for e in ok)[int(0.95 * (len(ok) - 1))]
    if any(e.remaining_requests is not None for e in ok):
        last = [e for e in ok if e.remaining_requests is not None][-1]
        assert got["quota_headroom"] == round(last.remaining_requests / last.limit_requests, 4)
    stats.handle([Event(kind=Kind.COOLDOWN, time=clock(), deployment="gpt-lab-acct111-use1", value=60.0,
                        status_code="429", error_class="RateLimitError")])
    got = row(stats.snapshot(), "gpt-lab-acct111-use1")
    assert got["state"] == "cooldown" and got["cooldown_seconds_left"] == 60.0
    clock.advance(61)
    assert row(stats.snapshot(), "gpt-lab-acct111-use1")["state"] == "complete outage"


def test_bounded_number_of_deployments() -> None:
    stats = DeploymentStats(None, max_deployments=2)
    stats.handle([Event(kind=Kind.REQUEST, time=0, deployment=f"d{i}", model_group="g") for i in range(5)])
    assert len(stats.snapshot()[0]["deployments"]) == 2 and stats.dropped == 3
