"""Per-channel messages through the real apprise stack.

json:// and the Alertmanager webhook go over loopback to a real aiohttp receiver. Slack,
Discord and Teams Workflows post to fixed hosts, so their payloads are taken at
apprise's HTTP call (`requests.post` / `requests.request`) and asserted there. Alert
labels and values come from a real LiteLLM capture run through the parser and catalog.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.alerts.config import WebhookConfig
from agent.alerts.notification import Notification
from agent.alerts.notify import AppriseTarget, SessionHolder, WebhookTarget
from agent.alerts.router import Router
from agent.config import parse_config
from agent.configtypes import Secret
from tests.notify_support import FakeClock, fixture_rate_limited_alerts

SLACK = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
DISCORD = "discord://1234567890/abcdefghijklmnopqrstuvwxyz"
WORKFLOWS = "workflows://prod-01.westus.logic.azure.com:443/a1b2c3d4e5/sigABCDEF123"
RUNBOOK = "https://runbooks.example.com/rate-limits"


class HttpCalls:
    """Stands in for the network at apprise's HTTP call; answers like the real service."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.status, self.headers = status, headers or {}

    def __call__(self, *args: Any, **kwargs: Any) -> requests.Response:
        method, url = (args[0], args[1]) if len(args) >= 2 else ("POST", args[0] if args else kwargs.get("url"))
        self.calls.append({"method": method, "url": url, "params": kwargs.get("params"),
                           "headers": kwargs.get("headers") or {}, "json": json.loads(kwargs.get("data") or "null")})
        response = requests.Response()
        response.status_code = self.status
        response.headers.update(self.headers)
        response._content = b"ok" if "hooks.slack.com" in str(url) else b"{}"  # Slack webhooks answer "ok"
        return response


@pytest.fixture
def http(monkeypatch: pytest.MonkeyPatch) -> HttpCalls:
    calls = HttpCalls()
    monkeypatch.setattr(requests, "post", calls)
    monkeypatch.setattr(requests, "request", calls)
    return calls


@pytest.fixture
def executor() -> Any:
    pool = ThreadPoolExecutor(max_workers=2)
    yield pool
    pool.shutdown(wait=True)


def notes(group_by: list[str], resolve_after: float | None = None) -> list[Notification]:
    """Notifications the router makes from the fixture's rate-limited deployments."""
    clock = FakeClock()
    cfg = parse_config({"notify": {"receivers": [{"name": "oncall", "urls": ["json://127.0.0.1:9/x"]}],
                                   "route": {"receiver": "oncall", "group_by": group_by, "group_wait": "0s"}}}).notify
    router = Router(cfg, clock=clock)
    t0 = clock()
    alerts = fixture_rate_limited_alerts(at=t0)
    router.receive(alerts)
    out = []
    for plan in router.flush_due(clock()):
        router.commit(plan)
        out.append(plan.notification)
    if resolve_after is not None:
        clock.advance(resolve_after)
        for a in alerts:
            a.state, a.resolved_at = "resolved", clock()
        router.receive(alerts)
        clock.advance(300)
        out = []
        for plan in router.flush_due(clock()):
            router.commit(plan)
            out.append(plan.notification)
    return out


def by_deployment(items: list[Notification], deployment: str) -> Notification:
    return next(n for n in items if n.alerts[0].labels["deployment"] == deployment)


@pytest.fixture
def expected(lab_environ: dict[str, str]) -> list[dict[str, Any]]:
    return [{**a.labels, "value": a.value} for a in fixture_rate_limited_alerts()]


async def test_slack_block_kit_message(http: HttpCalls, executor: Any, expected: list[dict[str, Any]]) -> None:
    one = expected[0]
    note = by_deployment(notes(["..."]), one["deployment"])
    result = await AppriseTarget("oncall", SLACK, executor, 5.0).send(note)
    assert result.ok
    [call] = http.calls
    assert call["url"] == "https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
    attachment = call["json"]["attachments"][0]
    assert attachment["color"] == "#D0021B"  # critical
    header, fields, section, context = attachment["blocks"]
    assert header["type"] == "header"
    assert header["text"]["text"].startswith("[FIRING:1] DeploymentRateLimited")
    texts = [f["text"] for f in fields["fields"]]
    assert f"*Deployment*\n{one['deployment']}" in texts
    assert f"*AWS account*\n{one['aws_account']}" in texts
    assert f"*AWS region*\n{one['aws_region']}" in texts
    assert f"*Model group*\n{one['model_group']}" in texts
    assert f"*Value*\n{int(one['value'])}" in texts
    assert "*Severity*\ncritical" in texts
    assert f"{int(one['value'])} rate-limited calls on {one['deployment']}" in section["text"]["text"]
    assert f"<{RUNBOOK}|Runbook>" in context["elements"][0]["text"]
    assert note.id in context["elements"][0]["text"]


async def test_slack_group_lists_alerts_and_resolve_says_duration(http: HttpCalls, executor: Any,
                                                                  expected: list[dict[str, Any]]) -> None:
    [group] = notes(["alertname", "model_group"])
    await AppriseTarget("oncall", SLACK, executor, 5.0).send(group)
    blocks = http.calls[-1]["json"]["attachments"][0]["blocks"]
    assert blocks[0]["text"]["text"] == f"[FIRING:{len(expected)}] DeploymentRateLimited · gpt-lab"
    assert f"*Deployment*\n{len(expected)} different" in [f["text"] for f in blocks[1]["fields"]]
    body = blocks[2]["text"]["text"]
    for item in expected:  # every alert listed, with its own labels in Slack's `code` style
        assert f"`deployment={item['deployment']}`" in body
        assert f"`aws_region={item['aws_region']}`" in body
    assert "**" not in body  # apprise converted CommonMark bold to Slack's *bold*

    [resolved] = notes(["alertname", "model_group"], resolve_after=725)
    await AppriseTarget("oncall", SLACK, executor, 5.0).send(resolved)
    attachment = http.calls[-1]["json"]["attachments"][0]
    assert attachment["color"] == "#2EB67D"
    assert attachment["blocks"][0]["text"]["text"].startswith(f"[RESOLVED:{len(expected)}]")
    assert attachment["blocks"][2]["text"]["text"].count("resolved after 12m 5s") == len(expected)


async def test_discord_embed(http: HttpCalls, executor: Any, expected: list[dict[str, Any]]) -> None:
    one = expected[-1]
    note = by_deployment(notes(["..."]), one["deployment"])
    assert (await AppriseTarget("oncall", DISCORD, executor, 5.0).send(note)).ok
    [call] = http.calls
    assert call["url"] == "https://discord.com/api/webhooks/1234567890/abcdefghijklmnopqrstuvwxyz"
    embed = call["json"]["embeds"][0]
    assert embed["color"] == 0xD0021B
    assert embed["title"].startswith("[FIRING:1] DeploymentRateLimited")
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Deployment"] == one["deployment"] and fields["AWS account"] == one["aws_account"]
    assert fields["AWS region"] == one["aws_region"] and fields["Value"] == str(int(one["value"]))
    assert fields["Runbook"] == f"[Runbook]({RUNBOOK})"
    assert f"rate-limited calls on {one['deployment']}" in embed["description"]
    assert note.id in embed["footer"]["text"]


async def test_teams_workflows_adaptive_card(http: HttpCalls, executor: Any, expected: list[dict[str, Any]]) -> None:
    one = expected[1]
    note = by_deployment(notes(["..."]), one["deployment"])
    assert (await AppriseTarget("oncall", WORKFLOWS, executor, 5.0).send(note)).ok
    [call] = http.calls
    assert call["url"] == ("https://prod-01.westus.logic.azure.com:443/workflows/a1b2c3d4e5/triggers/manual/paths/"
                           "invoke")
    assert call["params"]["sig"] == "sigABCDEF123"
    payload = call["json"]
    assert payload["type"] == "message"
    card = payload["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    content = card["content"]
    assert content["type"] == "AdaptiveCard"
    banner, facts, text, footer = content["body"]
    assert banner["style"] == "attention" and banner["items"][0]["color"] == "Attention"
    assert banner["items"][0]["text"].startswith("[FIRING:1] DeploymentRateLimited")
    fact = {f["title"]: f["value"] for f in facts["facts"]}
    assert fact["Deployment"] == one["deployment"] and fact["AWS account"] == one["aws_account"]
    assert fact["AWS region"] == one["aws_region"] and fact["Model group"] == one["model_group"]
    assert f"rate-limited calls on {one['deployment']}" in text["text"]
    assert f"[Runbook]({RUNBOOK})" in footer["text"]


async def test_apprise_http_status_and_retry_after_reach_the_outbox(monkeypatch: pytest.MonkeyPatch, executor: Any,
                                                                    lab_environ: dict[str, str]) -> None:
    """apprise says only True/False; the target still reports 429 + Retry-After, and 4xx as permanent."""
    app = web.Application()
    answers = [(429, {"Retry-After": "7"}), (400, {}), (503, {}), (200, {})]

    async def hook(request: web.Request) -> web.Response:
        status, headers = answers.pop(0)
        return web.json_response({}, status=status, headers=headers)

    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        target = AppriseTarget("oncall", f"json://127.0.0.1:{server.port}/hook", executor, 5.0)
        note = notes(["..."])[0]
        limited = await target.send(note)
        assert (limited.ok, limited.status, limited.retry_after, limited.permanent) == (False, 429, 7.0, False)
        bad = await target.send(note)
        assert (bad.ok, bad.status, bad.permanent) == (False, 400, True)
        down = await target.send(note)
        assert (down.ok, down.status, down.permanent) == (False, 503, False)
        assert (await target.send(note)).ok
    finally:
        await server.close()


async def _receiver() -> tuple[TestServer, list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []
    app = web.Application()

    async def hook(request: web.Request) -> web.Response:
        got.append({"path": request.path, "headers": dict(request.headers), "raw": await request.read()})
        return web.json_response({"ok": True})

    app.router.add_post("/{tail:.*}", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server, got


async def test_json_url_over_loopback(executor: Any, expected: list[dict[str, Any]]) -> None:
    server, got = await _receiver()
    try:
        [group] = notes(["alertname", "model_group"])
        target = AppriseTarget("oncall", f"json://127.0.0.1:{server.port}/apprise?+X-Team=ml", executor, 5.0)
        assert target.kind == "json"
        assert (await target.send(group)).ok
        [hit] = got
        body = json.loads(hit["raw"])
        assert hit["path"] == "/apprise"
        assert hit["headers"]["X-Gatewatch-Notification-Id"] == group.id == body["notification_id"]
        assert hit["headers"]["X-Team"] == "ml"
        assert body["type"] == "failure" and body["status"] == "firing"
        assert body["title"] == f"[FIRING:{len(expected)}] DeploymentRateLimited · gpt-lab"
        for item in expected:
            assert f"`deployment={item['deployment']}`" in body["message"]
        am = body["alertmanager"]
        assert am["version"] == "4" and len(am["alerts"]) == len(expected)
        assert {a["labels"]["aws_account"] for a in am["alerts"]} == {e["aws_account"] for e in expected}
    finally:
        await server.close()


async def test_alertmanager_webhook_v4_with_hmac(expected: list[dict[str, Any]]) -> None:
    server, got = await _receiver()
    sessions = SessionHolder()
    try:
        cfg = WebhookConfig(url=Secret(f"http://127.0.0.1:{server.port}/am"), headers={"X-Team": Secret("ml")},
                            hmac_secret=Secret("hmac-test-key"), max_alerts=2)
        target = WebhookTarget("oncall", cfg, sessions, 5.0)
        [group] = notes(["alertname", "model_group"])
        assert (await target.send(group)).ok
        [hit] = got
        signature = hit["headers"]["X-Gatewatch-Signature"]
        assert signature == "sha256=" + hmac.new(b"hmac-test-key", hit["raw"], hashlib.sha256).hexdigest()
        assert hit["headers"]["X-Gatewatch-Notification-Id"] == group.id
        assert hit["headers"]["X-Team"] == "ml"
        body = json.loads(hit["raw"])
        assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "oncall"
        assert body["groupLabels"] == {"alertname": "DeploymentRateLimited", "model_group": "gpt-lab"}
        assert body["commonLabels"]["model_group"] == "gpt-lab"
        assert len(body["alerts"]) == 2 and body["truncatedAlerts"] == len(expected) - 2
        first = body["alerts"][0]
        match = next(e for e in expected if e["deployment"] == first["labels"]["deployment"])
        assert first["labels"]["aws_account"] == match["aws_account"]
        assert first["labels"]["aws_region"] == match["aws_region"]
        assert first["value"] == match["value"]
        assert first["endsAt"] == "0001-01-01T00:00:00Z" and first["startsAt"].endswith("Z")
        assert first["annotations"]["runbook_url"] == RUNBOOK
    finally:
        await sessions.close()
        await server.close()


async def test_long_messages_fit_the_services_limits(http: HttpCalls, executor: Any,
                                                     lab_environ: dict[str, str]) -> None:
    """Slack rejects a section over 3000 characters (400 -> dead letter); the body is shortened instead."""
    [group] = notes(["alertname", "model_group"])
    for a in group.alerts:
        a.annotations["summary"] = "x" * 1500
    await AppriseTarget("oncall", SLACK, executor, 5.0).send(group)
    section = http.calls[-1]["json"]["attachments"][0]["blocks"][2]["text"]["text"]
    assert len(section) <= 3000 and section.endswith("… (message shortened)")
    await AppriseTarget("oncall", DISCORD, executor, 5.0).send(group)
    assert len(http.calls[-1]["json"]["embeds"][0]["description"]) <= 4096
