"""Issue 19 E, F: what a payload controls reaches a channel as text, and every body is JSON.

The notifications start from the router's real output for the fixture's rate-limited
deployments, with label values replaced by what an attacker puts in a LiteLLM request
(`model_group`, deployment names); the bodies checked are the ones the real apprise
plugins build (taken at apprise's HTTP call, as in test_notify_channels), and json://
and the Alertmanager webhook go over loopback to a real receiver.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

import pytest

from agent.alerts.config import WebhookConfig
from agent.alerts.notification import Notification
from agent.alerts.notify import AppriseTarget, SessionHolder, WebhookTarget
from agent.configtypes import Secret
from tests.test_notify_channels import (  # noqa: F401  (fixtures)
    DISCORD,
    SLACK,
    WORKFLOWS,
    HttpCalls,
    _receiver,
    by_deployment,
    executor,
    expected,
    http,
    notes,
)

HOSTILE = {
    "model_group": "<!channel> gpt-lab @everyone",
    "deployment": "<https://evil.example/login|Click to re-auth>",
    "aws_account": "[Click here](https://evil.example/x) & co <@123456> @here",
}


def hostile(note: Notification, value: float | None = None) -> Notification:
    alerts = []
    for a in note.alerts:
        labels = {**a.labels, **HOSTILE}
        summary = f"rate-limited calls on {HOSTILE['deployment']} ({HOSTILE['model_group']})"
        alerts.append(dataclasses.replace(a, labels=labels, annotations={**a.annotations, "summary": summary},
                                          value=a.value if value is None else value))
    common = {**note.common_labels, **HOSTILE}
    return dataclasses.replace(note, alerts=alerts, common_labels=common,
                               common_annotations={**note.common_annotations, "summary": alerts[0].annotations[
                                   "summary"]})


def texts(payload: Any) -> list[str]:
    out: list[str] = []
    if isinstance(payload, dict):
        for v in payload.values():
            out.extend(texts(v))
    elif isinstance(payload, list):
        for v in payload:
            out.extend(texts(v))
    elif isinstance(payload, str):
        out.append(payload)
    return out


def strict_json(raw: bytes | str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(raw, parse_constant=refuse)


@pytest.fixture
def note(expected) -> Notification:  # noqa: F811
    return hostile(by_deployment(notes(["..."]), expected[0]["deployment"]))


async def test_slack_no_mention_no_injected_link(http, executor, note):  # noqa: F811
    assert (await AppriseTarget("oncall", SLACK, executor, 5.0).send(note)).ok
    payload = http.calls[-1]["json"]
    for text in texts(payload):
        assert "<!" not in text, text  # <!channel>, <!here>, <!everyone> are Slack's mentions
        assert "<@" not in text, text
        assert "<https://evil" not in text and "|Click to re-auth>" not in text, text  # no <url|label> link
    fields = [f["text"] for f in payload["attachments"][0]["blocks"][1]["fields"]]
    assert "*Model group*\n&lt;!channel&gt; gpt-lab @everyone" in fields
    assert "*Deployment*\n&lt;https://evil.example/login|Click to re-auth&gt;" in fields
    body = payload["attachments"][0]["blocks"][2]["text"]["text"]
    assert "&lt;https://evil.example/login|Click to re-auth&gt;" in body


@pytest.mark.parametrize("url", [DISCORD, WORKFLOWS], ids=["discord", "teams"])
async def test_discord_and_teams_no_mention_no_markdown_link(http, executor, note, url):  # noqa: F811
    assert (await AppriseTarget("oncall", url, executor, 5.0).send(note)).ok
    payload = http.calls[-1]["json"]
    for text in texts(payload):
        assert not re.search(r"@(everyone|here)", text), text
        assert not re.search(r"(?<!\\)\]\(https://evil", text), text  # an unescaped [label](url)
        assert not re.search(r"(?<!\\)<[@!h]", text), text  # <@id>, <!channel>, <https://...>
    if url == DISCORD:
        assert payload["allowed_mentions"] == {"parse": []}
        fields = {f["name"]: f["value"] for f in payload["embeds"][0]["fields"]}
        assert fields["AWS account"] == ("\\[Click here\\]\\(https://evil.example/x\\) & co \\<@123456\\> "
                                         "@\u200bhere")


async def test_the_runbook_link_still_works(http, executor, note):  # noqa: F811
    await AppriseTarget("oncall", DISCORD, executor, 5.0).send(note)
    fields = {f["name"]: f["value"] for f in http.calls[-1]["json"]["embeds"][0]["fields"]}
    assert fields["Runbook"] == "[Runbook](https://runbooks.example.com/rate-limits)"


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("url", [SLACK, DISCORD, WORKFLOWS], ids=["slack", "discord", "teams"])
async def test_non_finite_values_still_send_valid_json(http, executor, note, url, value):  # noqa: F811
    result = await AppriseTarget("oncall", url, executor, 5.0).send(hostile(note, value))
    assert result.ok, result
    assert http.calls, "nothing sent"


@pytest.mark.parametrize("value", [math.inf, math.nan])
async def test_json_and_webhook_bodies_are_valid_json(executor, note, value):  # noqa: F811
    server, got = await _receiver()
    sessions = SessionHolder()
    try:
        bad = hostile(note, value)
        target = AppriseTarget("oncall", f"json://127.0.0.1:{server.port}/apprise", executor, 5.0)
        assert (await target.send(bad)).ok
        hook = WebhookTarget("oncall", WebhookConfig(url=Secret(f"http://127.0.0.1:{server.port}/am")), sessions,
                             5.0)
        assert (await hook.send(bad)).ok
        apprise_body, webhook_body = (strict_json(hit["raw"]) for hit in got)
        assert apprise_body["alertmanager"]["alerts"][0]["value"] is None
        assert webhook_body["alerts"][0]["value"] is None
        assert webhook_body["alerts"][0]["labels"]["model_group"] == HOSTILE["model_group"]  # machines get it raw
    finally:
        await sessions.close()
        await server.close()


def test_api_bodies_are_valid_json():
    from agent.parse.safejson import dumps

    text = dumps({"value": math.inf, "items": [math.nan, 1.5, {"v": -math.inf}]})
    assert strict_json(text) == {"value": None, "items": [None, 1.5, {"v": None}]}
