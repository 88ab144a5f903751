"""Notification text that tells the truth (issue 18): a resolve shows the value at resolve time and
how long the condition held (keep_firing_for apart), every value with its unit, task-local
alerts name their task, and the message links the dashboard and the runbook.

The shipped rules evaluate events on a driven clock; their alerts go through the router's
item building and every channel's renderer (agent/alerts/templates).
"""

from __future__ import annotations

import pytest

from agent.alerts.notification import Notification, common
from agent.alerts.router import Router
from agent.alerts.templates import body, render
from agent.alerts.templates.webhook import webhook_payload
from agent.alerts.units import with_unit
from agent.enrich import Catalog
from agent.events import Event, Kind
from agent.rules.config import RuleEngineConfig
from agent.rules.engine import RuleEngine
from agent.rules.loader import load_rule_set
from agent.rules.testing import MemoryState

T0 = 1_800_000_000.0
TASK = "arn:aws:ecs:us-east-1:111111111111:task/lab/0123"
DEP = {"model_group": "gpt-lab", "deployment": "gpt-lab-acct111-use1", "aws_account": "111111111111",
       "aws_region": "us-east-1", "api_provider": "openai"}


class Run:
    def __init__(self) -> None:
        self.engine = RuleEngine(RuleEngineConfig(persist_alerts=False), None, MemoryState(), Catalog(),
                                 clock=lambda: T0, run_loops=False)
        self.engine.apply(load_rule_set(None), T0)
        self.engine.task = TASK
        self.alerts: list = []

    async def step(self, group: str, at: float, events: list[Event] = ()) -> None:
        self.engine.handle(list(events))
        self.alerts += await self.engine.evaluate_group(group, T0 + at)

    def last(self, name: str, state: str):
        found = [a for a in self.alerts if a.name == name and a.state == state]
        assert found, f"no {state} {name}: {[(a.name, a.state) for a in self.alerts]}"
        return found[-1]


def note(alert, status: str, dashboard: str = "") -> Notification:
    item = Router._item(alert, status, alert.fingerprint)
    return Notification(id="n1", receiver="oncall", group_key="g", status=status, group_labels={},
                        common_labels=common([item.labels]), common_annotations=common([item.annotations]),
                        alerts=[item], created_at=T0, dashboard_url=dashboard)


def reading(at: float, remaining: float, reset: float | None = 1.0, **kw) -> Event:
    return Event(kind=Kind.REQUEST, time=T0 + at, remaining_requests=remaining, limit_requests=1000,
                 reset_requests=reset, **{**DEP, **kw})


async def test_a_resolve_shows_the_value_now_and_how_long_it_held_apart_from_keep_firing_for():
    run = Run()
    t = 0.0
    while t <= 180:  # 3 minutes of low readings: pending, then firing after `for: 2m`
        await run.step("quota", t, [reading(t, 40)])
        t += 15
    while t <= 420:  # healthy again: 993 left
        await run.step("quota", t, [reading(t, 993)])
        t += 15
    firing = run.last("RemainingRequestsLow", "firing")
    resolved = run.last("RemainingRequestsLow", "resolved")
    assert firing.value == pytest.approx(0.04) and firing.unit == "ratio"
    assert resolved.value == pytest.approx(0.993) and not resolved.no_data
    assert resolved.held_for == 180.0 and resolved.kept_for == 120.0  # keep_firing_for: 2m
    text = body(note(resolved, "resolved"))
    assert "value now **99%**" in text
    assert "condition held 3m, then kept firing 2m (keep_firing_for)" in text
    assert "When it fired: gpt-lab-acct111-use1 (gpt-lab) has 4% of its request rate limit left" in text
    assert "resolved after" not in text
    firing_text = body(note(firing, "firing"))
    assert "value **4%**" in firing_text and "value **0.04**" not in firing_text
    assert render(note(firing, "firing")).tokens["value"] == "4%"


async def test_traffic_stopping_resolves_with_a_no_data_note_never_as_fixed():
    run = Run()
    t = 0.0
    while t <= 240:  # a deployment failing: every call errors
        await run.step("deployments", t, [Event(kind=Kind.REQUEST, time=T0 + t, status="failure",
                                                status_code="500", **DEP) for _ in range(3)])
        t += 15
    while t <= 900:  # then no traffic at all
        await run.step("deployments", t)
        t += 15
    resolved = run.last("DeploymentErrorRatioHigh", "resolved")
    assert resolved.no_data and resolved.value is None
    text = body(note(resolved, "resolved"))
    assert "resolved without data" in text and "not seen to clear" in text
    assert "value now **no data**" in text
    assert render(note(resolved, "resolved")).tokens["value"] == "no data"


async def test_a_30s_cooldown_is_told_as_one_occurrence_and_its_window():
    run = Run()
    cooldown = Event(kind=Kind.COOLDOWN, time=T0 + 5, source="log", value=30.0, **DEP)
    await run.step("deployments", 15, [cooldown])
    t = 30.0
    while t <= 600:
        await run.step("deployments", t)
        t += 15
    resolved = run.last("DeploymentCooledDown", "resolved")
    assert resolved.window == 300.0 and resolved.held_for == 0.0
    # keep_firing_for (1m), less what the window's 15 s buckets let go early
    assert 30.0 <= resolved.kept_for <= 75.0
    text = body(note(resolved, "resolved"))
    assert "last occurrence 0s after it began, then none for its 5m window" in text
    assert "(keep_firing_for)" in text and "resolved after 6m" not in text


async def test_task_local_alerts_name_the_task_and_link_dashboard_and_runbook():
    run = Run()
    t = 0.0
    while t <= 420:  # slow deployment (p95 over 30 s for `for: 5m`): latency rules are `scope: local`
        await run.step("latency", t, [Event(kind=Kind.REQUEST, time=T0 + t, latency=40.0, **DEP)
                                      for _ in range(3)])
        t += 15
    firing = [a for a in run.alerts if a.state == "firing"]
    assert firing
    alert = firing[-1]
    assert alert.scope == "local" and alert.task == TASK and alert.unit == "seconds"
    n = note(alert, "firing", dashboard="https://grafana.example.com/d/gatewatch-deployments")
    text = body(n)
    assert f"task `{TASK}`" in text
    assert ("[Dashboard](https://grafana.example.com/d/gatewatch-deployments?var-model_group=gpt-lab"
            "&var-deployment=gpt-lab-acct111-use1&var-aws_account=111111111111&var-aws_region=us-east-1)") in text
    assert "**Runbook**" in text
    payload = webhook_payload(n)["alerts"][0]
    assert payload["task"] == TASK and payload["valueText"].endswith("s") and payload["dashboardURL"]


def test_global_alerts_name_no_task():
    from agent.alert import Alert
    from agent.rules.state import ActiveAlert, to_alert

    a = ActiveAlert(key=("x",), labels={"alertname": "A"}, state="firing", active_at=T0, value=1.0, last_true=T0)
    assert to_alert(a, "g", "global", task=TASK).task == ""
    assert to_alert(a, "g", "local", task=TASK).task == TASK
    assert isinstance(to_alert(a, "g", "local"), Alert)


@pytest.mark.parametrize(("value", "unit", "text"), [
    (0.0, "ratio", "0%"), (0.04, "ratio", "4%"), (0.993, "ratio", "99%"), (0.005, "ratio", "0.5%"),
    (165.0, "seconds", "2m 45s"), (1.5, "seconds", "1.5s"), (51.5, "USD", "$51.50"), (3.0, "requests", "3 requests"),
    (1.0, "cooldowns", "1 cooldown"), (2.0, "state", "complete outage (2)"), (None, "ratio", "no data"),
    (7.0, "", "7"),
])
def test_values_with_units(value, unit, text):
    assert with_unit(value, unit) == text
