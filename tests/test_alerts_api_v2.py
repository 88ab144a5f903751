"""Alertmanager API v2 against a real gatewatch server, every answer validated against
Alertmanager's own OpenAPI spec (v0.25.0 and main, vendored in tests/fixtures/alertmanager)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.alerts_v2_support import TOKEN, Api, HookReceiver, notify_config
from tests.notify_support import until


@pytest.fixture
async def receiver() -> Any:
    r = await HookReceiver().start()
    yield r
    await r.server.close()

SPECS = Path(__file__).parent / "fixtures" / "alertmanager"


def spec_validators(definition: str) -> list[jsonschema.Draft4Validator]:
    out = []
    for name in ("openapi-v0.25.0.yaml", "openapi-main.yaml"):
        spec = yaml.safe_load((SPECS / name).read_text())
        schema = {"definitions": spec["definitions"], "$ref": f"#/definitions/{definition}"}
        out.append(jsonschema.Draft4Validator(schema))
    return out


def assert_valid(definition: str, data: Any) -> None:
    for validator in spec_validators(definition):
        errors = sorted(validator.iter_errors(data), key=str)
        assert not errors, f"{definition}: {errors[0].message} at {list(errors[0].absolute_path)}"


def assert_receivers_valid(data: Any) -> None:
    for validator in spec_validators("receiver"):
        for item in data:
            validator.validate(item)


POSTED = [
    {"labels": {"alertname": "DeploymentRateLimited", "severity": "critical", "deployment": "gpt-lab-acct111-use1",
                "aws_region": "us-east-1"},
     "annotations": {"summary": "429s on gpt-lab-acct111-use1", "runbook_url": "https://runbooks.example/429"},
     "generatorURL": "http://prometheus.example/graph?g0.expr=up"},
    {"labels": {"alertname": "DeploymentRateLimited", "severity": "critical", "deployment": "gpt-lab-acct222-euw1",
                "aws_region": "eu-west-1"}, "annotations": {"summary": "429s on gpt-lab-acct222-euw1"}},
]


async def test_status_and_receivers_match_the_spec(gatewatch_server: Any, tmp_path: Path) -> None:
    _gw, base = await gatewatch_server(notify_config(tmp_path))
    api = Api(base)
    status, body = await api.call("GET", "/api/v2/status")
    assert status == 200
    assert_valid("alertmanagerStatus", body)
    assert body["cluster"]["status"] == "disabled"
    original = yaml.safe_load(body["config"]["original"])
    assert original["receivers"] == [{"name": "oncall"}]
    assert "json://" not in body["config"]["original"]  # no receiver URL leaks
    status, body = await api.call("GET", "/api/v2/receivers")
    assert status == 200 and body == [{"name": "oncall"}]
    assert_receivers_valid(body)
    status, _ = await api.call("GET", "/api/v2/status", token=None)
    assert status == 401


async def test_posted_alerts_are_listed_grouped_and_delivered(gatewatch_server: Any, tmp_path: Path,
                                                              receiver: Any) -> None:
    _gw, base = await gatewatch_server(notify_config(tmp_path, receiver))
    api = Api(base)
    status, body = await api.call("POST", "/api/v2/alerts", POSTED)
    assert status == 200, body
    status, alerts = await api.call("GET", "/api/v2/alerts")
    assert status == 200
    assert_valid("gettableAlerts", alerts)
    assert sorted(a["labels"]["deployment"] for a in alerts) == ["gpt-lab-acct111-use1", "gpt-lab-acct222-euw1"]
    first = next(a for a in alerts if a["labels"]["deployment"] == "gpt-lab-acct111-use1")
    assert first["status"] == {"state": "active", "silencedBy": [], "inhibitedBy": [], "mutedBy": []}
    assert first["receivers"] == [{"name": "oncall"}]
    assert first["generatorURL"] == "http://prometheus.example/graph?g0.expr=up"
    assert first["annotations"]["runbook_url"] == "https://runbooks.example/429"

    status, groups = await api.call("GET", "/api/v2/alerts/groups")
    assert status == 200
    assert_valid("alertGroups", groups)
    assert [(g["labels"], g["receiver"]["name"], len(g["alerts"])) for g in groups] == [
        ({"alertname": "DeploymentRateLimited"}, "oncall", 2)]

    # through routing, grouping and the outbox to the receiver
    await until(lambda: len(receiver.got) >= 1, limit=30, what="the notification")
    sent = json.dumps(receiver.got[0]["body"])  # apprise's json:// body: title and message
    assert "DeploymentRateLimited" in sent
    assert "gpt-lab-acct111-use1" in sent and "gpt-lab-acct222-euw1" in sent

    # filters
    _, only = await api.call("GET", '/api/v2/alerts?filter=aws_region%3D"eu-west-1"')
    assert [a["labels"]["deployment"] for a in only] == ["gpt-lab-acct222-euw1"]
    _, none = await api.call("GET", "/api/v2/alerts?receiver=nobody")
    assert none == []
    _, suppressed_only = await api.call("GET", "/api/v2/alerts?active=false")
    assert suppressed_only == []
    status, bad = await api.call("GET", "/api/v2/alerts?filter=%7Bnot+a+matcher")
    assert status == 400 and isinstance(bad, str)


async def test_silences_lifecycle_and_alert_state(gatewatch_server: Any, tmp_path: Path) -> None:
    _gw, base = await gatewatch_server(notify_config(tmp_path))
    api = Api(base)
    assert (await api.call("POST", "/api/v2/alerts", POSTED))[0] == 200
    silence = {"matchers": [{"name": "deployment", "value": "gpt-lab-acct111-use1", "isRegex": False,
                             "isEqual": True}],
               "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2999-01-01T00:00:00Z", "createdBy": "amtool",
               "comment": "provider incident"}
    status, body = await api.call("POST", "/api/v2/silences", silence)
    assert status == 200, body
    silence_id = body["silenceID"]
    status, got = await api.call("GET", f"/api/v2/silence/{silence_id}")
    assert status == 200
    assert_valid("gettableSilence", got)
    assert got["status"]["state"] == "active" and got["comment"] == "provider incident"

    _, alerts = await api.call("GET", "/api/v2/alerts")
    by_dep = {a["labels"]["deployment"]: a for a in alerts}
    assert by_dep["gpt-lab-acct111-use1"]["status"]["state"] == "suppressed"
    assert by_dep["gpt-lab-acct111-use1"]["status"]["silencedBy"] == [silence_id]
    assert by_dep["gpt-lab-acct222-euw1"]["status"]["state"] == "active"
    _, unsilenced = await api.call("GET", "/api/v2/alerts?silenced=false")
    assert [a["labels"]["deployment"] for a in unsilenced] == ["gpt-lab-acct222-euw1"]

    _, listed = await api.call("GET", '/api/v2/silences?filter=deployment%3D"gpt-lab-acct111-use1"')
    assert_valid("gettableSilences", listed)
    assert [s["id"] for s in listed] == [silence_id]
    _, other = await api.call("GET", '/api/v2/silences?filter=deployment%3D"elsewhere"')
    assert other == []

    # update in place (amtool silence update), unknown ids are 404
    status, _ = await api.call("POST", "/api/v2/silences", {**silence, "id": silence_id, "comment": "still"})
    assert status == 200
    assert (await api.call("GET", f"/api/v2/silence/{silence_id}"))[1]["comment"] == "still"
    assert (await api.call("POST", "/api/v2/silences", {**silence, "id": "no-such-id"}))[0] == 404

    status, _ = await api.call("DELETE", f"/api/v2/silence/{silence_id}")
    assert status == 200
    _, got = await api.call("GET", f"/api/v2/silence/{silence_id}")
    assert got["status"]["state"] == "expired"
    _, alerts = await api.call("GET", "/api/v2/alerts")
    assert all(a["status"]["state"] == "active" for a in alerts)
    assert (await api.call("DELETE", "/api/v2/silence/nope"))[0] == 404
    assert (await api.call("GET", "/api/v2/silence/nope"))[0] == 404


@pytest.mark.parametrize("body, reason", [
    ({"labels": {}}, "JSON array"),
    ([{"labels": {}}], "labels"),
    ([{"labels": {"bad-name": "x"}}], "invalid label name"),
    ([{"labels": {"a": "b"}, "startsAt": "yesterday"}], "startsAt"),
    ([{"labels": {"a": "b"}, "startsAt": "2025-01-02T00:00:00Z", "endsAt": "2025-01-01T00:00:00Z"}], "endsAt"),
])
async def test_bad_alerts_are_400_with_the_reason(gatewatch_server: Any, tmp_path: Path, body: Any,
                                                 reason: str) -> None:
    _gw, base = await gatewatch_server(notify_config(tmp_path))
    status, answer = await Api(base).call("POST", "/api/v2/alerts", body)
    assert status == 400 and reason in answer


async def test_resolved_alerts_leave_the_list(gatewatch_server: Any, tmp_path: Path) -> None:
    _gw, base = await gatewatch_server(notify_config(tmp_path))
    api = Api(base)
    await api.call("POST", "/api/v2/alerts", POSTED[:1])
    assert len((await api.call("GET", "/api/v2/alerts"))[1]) == 1
    await api.call("POST", "/api/v2/alerts", [{**POSTED[0], "endsAt": "2000-01-01T00:00:00Z",
                                                "startsAt": "1999-01-01T00:00:00Z"}])
    assert (await api.call("GET", "/api/v2/alerts"))[1] == []


async def test_without_notify_alerts_go_to_the_log_receiver(gatewatch_server: Any, tmp_path: Path) -> None:
    _gw, base = await gatewatch_server({"state_dir": str(tmp_path / "s"), "server": {"auth_token": TOKEN}})
    api = Api(base)
    assert (await api.call("POST", "/api/v2/alerts", POSTED[:1]))[0] == 200
    _, alerts = await api.call("GET", "/api/v2/alerts")
    assert alerts[0]["receivers"] == [{"name": "log"}]
    _, groups = await api.call("GET", "/api/v2/alerts/groups")
    assert_valid("alertGroups", groups)
    status, body = await api.call("POST", "/api/v2/silences", {"matchers": ["alertname=DeploymentRateLimited"],
                                                               "duration": "1h", "comment": "x", "createdBy": "t"})
    assert status == 200
    _, alerts = await api.call("GET", "/api/v2/alerts")
    assert alerts[0]["status"]["silencedBy"] == [body["silenceID"]]


async def test_writes_without_a_token_are_refused_unless_enabled(gatewatch_server: Any, tmp_path: Path) -> None:
    _gw, base = await gatewatch_server({"state_dir": str(tmp_path / "a")})
    api = Api(base)
    status, body = await api.call("POST", "/api/v2/alerts", POSTED, token=None)
    assert status == 403 and "server.allow_unauthenticated_writes" in json.dumps(body)
    status, _ = await api.call("POST", "/api/v2/silences", {"matchers": ["a=b"], "duration": "1h"}, token=None)
    assert status == 403
    assert (await api.call("GET", "/api/v2/alerts", token=None))[0] == 200  # reads stay open
    _gw2, base2 = await gatewatch_server({"state_dir": str(tmp_path / "b"),
                                          "server": {"allow_unauthenticated_writes": True}})
    assert (await Api(base2).call("POST", "/api/v2/alerts", POSTED, token=None))[0] == 200


async def test_cross_site_browser_writes_are_refused(gatewatch_server: Any, tmp_path: Path) -> None:
    _gw, base = await gatewatch_server(notify_config(tmp_path))
    api = Api(base)
    status, _ = await api.call("POST", "/api/v2/alerts", POSTED, headers={"Origin": "https://evil.example"})
    assert status == 403
    status, _ = await api.call("POST", "/api/v2/alerts", POSTED, headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 403
    host = base.split("://", 1)[1]
    status, _ = await api.call("POST", "/api/v2/alerts", POSTED, headers={"Origin": f"http://{host}"})
    assert status == 200


async def test_alerts_posted_to_v1_are_listed_by_v2(gatewatch_server: Any, tmp_path: Path) -> None:
    _gw, base = await gatewatch_server(notify_config(tmp_path))
    api = Api(base)
    assert (await api.call("POST", "/api/v1/alerts", POSTED[:1]))[0] == 200
    _, alerts = await api.call("GET", "/api/v2/alerts")
    assert [a["labels"]["deployment"] for a in alerts] == ["gpt-lab-acct111-use1"]
