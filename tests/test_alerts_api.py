"""The notify API and CLI against a real gatewatch server: silences (persisted, enforced),
dead letters, test messages, metrics names, and no URL or token in any answer or log."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent import cli
from agent.redact import RedactingFilter
from tests.alerts_v2_support import TOKEN, Api, HookReceiver, notify_config
from tests.notify_support import until

SECRET_PATH = "s3cr3t-hook-path-777"


@pytest.fixture
async def receiver() -> Any:
    r = await HookReceiver().start()
    yield r
    await r.server.close()


def config(receiver: HookReceiver, tmp_path: Path, state: str = "state") -> dict[str, Any]:
    """Every label grouped (the title names the deployment); the hook at a path no answer or log may show."""
    return notify_config(tmp_path, receiver, state=state, hook_path=SECRET_PATH,
                         route={"receiver": "oncall", "group_by": ["..."], "group_wait": "0s"})


ALERTS = [{"labels": {"alertname": "DeploymentRateLimited", "severity": "critical", "deployment": dep,
                      "aws_region": region}, "annotations": {"summary": f"429s on {dep}"}, "value": 3}
          for dep, region in (("gpt-lab-acct111-use1", "us-east-1"), ("gpt-lab-acct222-euw1", "eu-west-1"))]


async def test_silences_api_is_enforced_persisted_and_protected(gatewatch_server: Any, receiver: HookReceiver,
                                                                tmp_path: Path) -> None:
    gw, base = await gatewatch_server(config(receiver, tmp_path))
    api = Api(base)
    body = {"matchers": ['deployment="gpt-lab-acct111-use1"'], "duration": "2h", "createdBy": "alice",
            "comment": "quota raise in progress"}
    assert (await api.call("POST", "/api/v1/silences", body, token=None))[0] == 401
    status, answer = await api.call("POST", "/api/v1/silences", body)
    assert status == 200
    silence_id = answer["silenceID"]
    status, items = await api.call("GET", "/api/v1/silences")
    assert [(s["id"], s["status"]["state"], s["createdBy"]) for s in items] == [(silence_id, "active", "alice")]
    assert items[0]["matchers"] == [{"name": "deployment", "value": "gpt-lab-acct111-use1", "isRegex": False,
                                     "isEqual": True}]

    assert (await api.call("POST", "/api/v1/alerts", ALERTS))[0] == 200
    await until(lambda: len(receiver.got) == 1, what="the unsilenced alert delivered")
    await asyncio.sleep(0.3)  # the silenced one must not follow
    assert len(receiver.got) == 1
    delivered = receiver.got[0]["body"]["alertmanager"]["alerts"][0]["labels"]["deployment"]
    assert delivered == "gpt-lab-acct222-euw1"
    groups = (await api.call("GET", "/api/v1/alerts/groups"))[1]
    silenced = [a for g in groups for a in g["alerts"] if a["silenced_by"]]
    assert [a["labels"]["deployment"] for a in silenced] == ["gpt-lab-acct111-use1"]

    status, expired = await api.call("DELETE", f"/api/v1/silences/{silence_id}")
    assert status == 200 and expired["status"]["state"] == "expired"
    assert (await api.call("DELETE", "/api/v1/silences/nope"))[0] == 404

    # persisted: a new process on the same state_dir lists it
    await gw.stop()
    _gw2, base2 = await gatewatch_server(config(receiver, tmp_path))
    status, items = await Api(base2).call("GET", "/api/v1/silences")
    assert [(s["id"], s["status"]["state"], s["comment"]) for s in items] == [
        (silence_id, "expired", "quota raise in progress")]


@pytest.mark.parametrize("body, message", [
    ({"matchers": [], "duration": "1h"}, "matchers"),
    ({"matchers": ["deployment=~(("], "duration": "1h"}, "regex"),
    ({"matchers": ['deployment=~".*"'], "duration": "1h"}, "every alert"),
    ({"matchers": ["a=b"], "startsAt": "2000-01-01T00:00:00Z", "endsAt": "2001-01-01T00:00:00Z"}, "past"),
    ({"matchers": ["a=b"]}, "endsAt or duration"),
    ({"matchers": ["a=b"], "duration": "soon"}, "duration"),
])
async def test_bad_silences_are_400_with_a_reason(gatewatch_server: Any, receiver: HookReceiver, tmp_path: Path,
                                                  body: dict, message: str) -> None:
    _gw, base = await gatewatch_server(config(receiver, tmp_path))
    status, answer = await Api(base).call("POST", "/api/v1/silences", body)
    assert status == 400 and message in answer["error"]


async def test_cli_silence_add_list_expire(gatewatch_server: Any, receiver: HookReceiver, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    _gw, base = await gatewatch_server(config(receiver, tmp_path))
    common = ["--url", base, "--token", TOKEN]

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await asyncio.to_thread(run, "silence", "add", 'aws_region=~"eu-.*"', "alertname=SlowDeployment",
                                           "--duration", "30m", "-c", "maintenance", "-a", "bob", *common)
    assert code == 0
    silence_id = out.strip()
    code, out, _ = await asyncio.to_thread(run, "silence", "list", "--state", "active", *common)
    assert code == 0 and silence_id in out and 'aws_region=~"eu-.*"' in out and "maintenance" in out
    code, out, _ = await asyncio.to_thread(run, "silence", "expire", silence_id, *common)
    assert code == 0 and f"expired {silence_id}" in out
    code, out, _ = await asyncio.to_thread(run, "silence", "list", "--state", "active", "--json", *common)
    assert json.loads(out) == []
    code, _, err = await asyncio.to_thread(run, "silence", "list", "--url", base, "--token", "wrong")
    assert code == 1 and "401" in err
    code, _, err = await asyncio.to_thread(run, "silence", "add", "deployment=~((", *common)
    assert code == 1 and "regex" in err


async def test_dead_letters_api_masks_targets(gatewatch_server: Any, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(RedactingFilter())  # as on gatewatch's own log handler (agent.logsetup.configure)
    broken = await HookReceiver(status=400).start()
    try:
        gw, base = await gatewatch_server(config(broken, tmp_path))
        api = Api(base)
        assert (await api.call("POST", "/api/v1/alerts", ALERTS[:1]))[0] == 200
        await until(lambda: gw.notify.outbox.dead_count == 1, what="a dead letter")
        status, dead = await api.call("GET", "/api/v1/notifications/dead")
        assert status == 200 and dead["count"] == 1
        [item] = dead["items"]
        assert item["target"] == "json://***" and item["kind"] == "json" and item["last_status"] == 400
        assert item["title"] == "[FIRING:1] DeploymentRateLimited · gpt-lab-acct111-use1 · us-east-1"
        assert item["notification"]["alerts"][0]["labels"]["deployment"] == "gpt-lab-acct111-use1"

        async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as response:
            metrics = await response.text()
        assert "gatewatch_dead_letters 1.0" in metrics
        assert "gatewatch_dead_letters_total 1.0" in metrics
        assert 'gatewatch_notifications_total{outcome="dead",receiver="oncall"} 1.0' in metrics
        for name in ("gatewatch_outbox_depth 0.0", "gatewatch_outbox_oldest_age_seconds 0.0"):
            assert name in metrics
        check = await asyncio.to_thread(subprocess.run, ["promtool", "check", "metrics"], input=metrics,
                                        capture_output=True, text=True)
        assert "duplicate" not in (check.stdout + check.stderr).lower()
        assert "error" not in check.stderr.lower(), check.stderr

        broken.status = 200
        status, answer = await api.call("POST", f"/api/v1/notifications/dead/{item['id']}/retry")
        assert status == 200 and answer == {"requeued": 1}
        await until(lambda: any(g["body"].get("notification_id") == item["id"] for g in broken.got[1:]),
                    what="the retried dead letter delivered")
        assert (await api.call("DELETE", f"/api/v1/notifications/dead/{item['id']}"))[0] == 404

        every_answer = json.dumps([await api.call("GET", p) for p in (
            "/api/v1/notifications/dead", "/api/v1/notifications/pending", "/api/v1/alerts/groups",
            "/api/v1/silences")])
        assert SECRET_PATH not in every_answer
        assert SECRET_PATH not in caplog.text
    finally:
        await broken.server.close()


async def test_notify_test_via_api_and_cli(gatewatch_server: Any, receiver: HookReceiver, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _gw, base = await gatewatch_server(config(receiver, tmp_path))
    status, answer = await Api(base).call("POST", "/api/v1/receivers/oncall/test")
    assert status == 200 and answer["ok"] and answer["results"][0]["target"] == "json://***"
    assert receiver.titles() == ["[FIRING:1] GatewatchTest"]
    assert (await Api(base).call("POST", "/api/v1/receivers/nobody/test"))[0] == 404

    config_file = tmp_path / "gw.yaml"
    import yaml

    data = config(receiver, tmp_path, "state2")
    data["notify"]["receivers"][0]["urls"] = ["${ONCALL_URL}"]
    config_file.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("ONCALL_URL", f"json://127.0.0.1:{receiver.port}/{SECRET_PATH}")
    code = await asyncio.to_thread(cli.main, ["notify", "test", "oncall", "--config", str(config_file)])
    out = capsys.readouterr().out
    assert code == 0 and out.strip() == "json://***: ok"
    assert receiver.titles() == ["[FIRING:1] GatewatchTest"] * 2
    assert SECRET_PATH not in out
    code = await asyncio.to_thread(cli.main, ["notify", "test", "oncall", "--url", base, "--token", TOKEN])
    assert code == 0 and len(receiver.got) == 3
    code = await asyncio.to_thread(cli.main, ["notify", "test", "nobody", "--config", str(config_file)])
    assert code == 2
