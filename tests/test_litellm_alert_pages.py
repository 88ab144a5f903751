"""LiteLLM's own alerts become pages (issue 18): its budget WebhookEvents and slack-format
alerts, from the real captures, through the shipped rule pack (rules/litellm.yml), then
through gatewatch's router and outbox to a receiver; one page for the copies every
replica sends (shared state); resolved once LiteLLM stops repeating it.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.enrich import Catalog
from agent.parse.webhook import alert_to_event
from agent.rules.config import RuleEngineConfig
from agent.rules.engine import RuleEngine
from agent.rules.loader import load_rule_set
from agent.rules.testing import MemoryState
from tests.conftest import load_capture
from tests.notify_support import ReceiverProcess, until
from tests.redis_support import RedisServer, requires_redis

T0 = 1_800_000_000.0
HOUR = 3600.0


def body(name: str) -> dict[str, Any]:
    return load_capture(name)["body_json"]


def budget_event(event: str = "budget_crossed", **changes: Any) -> dict[str, Any]:
    """The captured WebhookEvent (LiteLLM 1.108.7, `budget_crossed`), as another event type."""
    data = copy.deepcopy(body("alert_webhook_health_1.json"))
    data.update(event=event, **changes)
    return data


def engine() -> RuleEngine:
    e = RuleEngine(RuleEngineConfig(persist_alerts=False), None, MemoryState(), Catalog(), clock=lambda: T0,
                   run_loops=False)
    e.apply(load_rule_set(None), T0)
    return e


async def pages(e: RuleEngine, bodies: list[dict[str, Any]], at: float) -> list[Any]:
    e.handle([alert_to_event(b, now=at) for b in bodies])
    return [a for a in await e.evaluate_group("litellm", at)]


async def test_the_captured_budget_webhook_pages_with_its_labels():
    e = engine()
    alerts = await pages(e, [body("alert_webhook_health_1.json")], T0)
    assert [(a.state, a.labels) for a in alerts] == [("firing", {
        "alertname": "LiteLLMBudgetAlert", "event": "budget_crossed", "event_group": "key",
        "user": "default_user_id", "max_budget": "0", "severity": "warning", "family": "budget"})]
    page = alerts[0]
    assert page.value == 1.0  # the spend LiteLLM reported
    assert page.annotations["summary"] == \
        "LiteLLM budget_crossed for key default_user_id: spend 1.00 USD of max budget 0 USD"
    assert page.annotations["runbook"]


@pytest.mark.parametrize("event", ["budget_crossed", "max_budget_alert", "soft_budget_crossed", "threshold_crossed",
                                   "projected_limit_exceeded"])
async def test_every_budget_event_type_pages(event):
    alerts = await pages(engine(), [budget_event(event, key_alias="team-a-key", team_id="team-a", max_budget=50.0,
                                                 spend=51.5)], T0)
    assert len(alerts) == 1 and alerts[0].labels["event"] == event
    assert (alerts[0].labels["key_alias"], alerts[0].labels["team"], alerts[0].labels["max_budget"]) == \
        ("team-a-key", "team-a", "50")
    assert alerts[0].value == 51.5


@pytest.mark.parametrize("event", ["key_created", "internal_user_created", "spend_tracked", "key_rotated"])
async def test_informational_webhook_events_do_not_page(event):
    assert await pages(engine(), [budget_event(event)], T0) == []


async def test_one_alert_for_the_copies_of_every_replica():
    """Three proxy replicas send the same budget_crossed: one alert (no task in its labels)."""
    alerts = await pages(engine(), [body("alert_webhook_health_1.json")] * 3, T0)
    assert len(alerts) == 1


async def test_resolves_once_litellm_stops_repeating_it():
    e = engine()
    await pages(e, [body("alert_webhook_health_1.json")], T0)
    # LiteLLM repeats it (budget_alert_ttl 24 h) while requests keep crossing: still firing
    assert [a.state for a in await pages(e, [body("alert_webhook_health_1.json")], T0 + 24 * HOUR)] == ["firing"]
    assert [a.state for a in await pages(e, [], T0 + 48 * HOUR)] == ["firing"]
    # no repeat for 25 h: the budget period reset
    resolved = await pages(e, [], T0 + 49 * HOUR + 60)
    assert [(a.state, a.labels["event"]) for a in resolved] == [("resolved", "budget_crossed")]


@pytest.mark.parametrize(("capture", "event", "level"), [
    ("alert_slack_outage_1.json", "outage_alerts", "Medium"),
    ("alert_slack_health_1.json", "llm_too_slow", "Low"),
    ("alert_slack_slow_1.json", "llm_requests_hanging", "Medium"),
    ("alert_slack_no_deployments_1.json", "llm_exceptions", "High"),
])
async def test_slack_format_alerts_page(capture, event, level):
    alerts = await pages(engine(), [body(capture)], T0)
    assert len(alerts) == 1
    page = alerts[0]
    assert (page.labels["alertname"], page.labels["event"], page.labels["level"]) == ("LiteLLMAlert", event, level)
    assert page.annotations["summary"].startswith(f"LiteLLM alert {event} ({level})")


async def test_slack_format_cooldown_and_db_alerts_page():
    text = "Alert type: `{}`\nLevel: `High`\nTimestamp: `21:04:51`\n\nMessage: `boom`"
    bodies = [{"text": text.format("cooldown_deployment")}, {"text": text.format("db_exceptions")}]
    alerts = await pages(engine(), bodies, T0)
    assert sorted(a.labels["event"] for a in alerts) == ["cooldown_deployment", "db_exceptions"]


async def test_reports_are_not_pages():
    text = "Alert type: `{}`\nLevel: `Low`\nTimestamp: `21:04:51`\n\nMessage: `report`"
    assert await pages(engine(), [{"text": text.format(t)} for t in ("spend_reports", "daily_reports",
                                                                        "new_model_added")], T0) == []


# -- through the app: route -> rules -> router -> outbox -> receiver, one page for two tasks ---------

VALUES = "groups:\n  litellm: {interval: 200ms}\n"


@pytest.fixture
def receiver() -> Iterator[ReceiverProcess]:
    process = ReceiverProcess()
    yield process
    process.close()


@requires_redis
async def test_two_tasks_one_budget_page_through_the_router(gatewatch_server: Any, receiver: ReceiverProcess,
                                                           tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        values = tmp_path / "values.yml"
        values.write_text(VALUES)
        bases = []
        for task in range(2):
            _gw, base = await gatewatch_server({
                "attribution": {"ecs_metadata": False},
                "rule_engine": {"values": [str(values)]},
                "state": {"url": redis.url, "key_prefix": "gw-test:"},
                "notify": {
                    "task_id": f"task-{task}",  # two tasks in one test process
                    "receivers": [{"name": "oncall", "webhook": {"url": receiver.url("/alertmanager")}}],
                    "route": {"receiver": "oncall", "group_by": ["alertname", "event"], "group_wait": "500ms",
                              "group_interval": "1s", "repeat_interval": "1h"},
                    "outbox": {"initial_backoff": "100ms", "max_backoff": "500ms"},
                },
            })
            bases.append(base)
        data = json.dumps(body("alert_webhook_health_1.json")).encode()
        async with aiohttp.ClientSession() as session:
            for base in bases:  # each replica's proxy posts to its own sidecar
                async with session.post(base + "/v1/litellm/alerts", data=data,
                                        headers={"Content-Type": "application/json"}) as response:
                    assert response.status == 200, await response.text()
        got = await until(receiver.accepted, limit=30, what="the budget page")
        page = got[0]["body"]
        assert page["status"] == "firing"
        assert [a["labels"]["alertname"] for a in page["alerts"]] == ["LiteLLMBudgetAlert"]
        assert page["alerts"][0]["labels"]["event"] == "budget_crossed"
        await asyncio.sleep(3)  # both tasks evaluated ~15 times since: still one notification
        notes = await receiver.accepted()
        assert len(notes) == 1, [n["headers"].get("X-Gatewatch-Notification-Id") for n in notes]
    finally:
        redis.close()
