"""The default rules in a running sidecar: fixture scenarios fire and resolve; the HTTP API; reload.

The captured LiteLLM payloads are POSTed to the real ingest route; the proxy's captured
JSON logs go through the real log parser into the pipeline (as the log tail does). The
engine's clock is set to the capture's timeline and stepped by hand, evaluating like the
group loops would (every 15 s), so `for`/`keep_firing_for` play out in a few milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest
import yaml

from agent.alert import Alert
from agent.parse.litellm import decode_body
from agent.replay import ReplayStats, events_from_file
from tests.conftest import FIXTURES, ROOT, free_port, load_capture
from tests.tail_support import async_wait_until

pytestmark = pytest.mark.integration


class Recorder:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def receive(self, alerts: Sequence[Alert]) -> None:
        self.alerts.extend(alerts)

    def names(self, state: str) -> set[tuple[str, str]]:
        return {(a.labels["alertname"], a.labels.get("deployment") or a.labels.get("model_group", ""))
                for a in self.alerts if a.state == state}


def capture_body(name: str) -> bytes:
    capture = load_capture(name)
    return (capture["body_text"] or json.dumps(capture["body_json"])).encode()


def capture_items(name: str) -> list[dict[str, Any]]:
    body = load_capture(name)["body_json"]
    return body if isinstance(body, list) else [body]


async def post(url: str, name: str, times: int = 1, token: str | None = None) -> None:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    async with aiohttp.ClientSession() as session:
        for _ in range(times):
            async with session.post(f"{url}/v1/litellm/events", data=capture_body(name), headers=headers) as r:
                assert r.status == 200, await r.text()


def log_events(name: str) -> list:
    from agent.parse.logs import LogParser

    return [e for batch in events_from_file(FIXTURES / name, ReplayStats(), LogParser()) for e in batch]


async def get(url: str, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url + path, headers=headers) as r:
        return r.status, await r.json()


@pytest.fixture
async def sidecar(gatewatch_server, lab_environ):
    gw, url = await gatewatch_server({"litellm": {"config": str(FIXTURES / "config.yaml")}})
    engine = gw.rule_engine
    await engine.pause()  # the test steps the clock and evaluates itself
    recorder = Recorder()
    gw.alert_receiver = recorder
    return gw, url, engine, recorder


async def step(engine, start: float, end: float, every: float = 15.0) -> None:
    t = start
    while t <= end:
        await engine.evaluate_all(t)
        t += every


def last_time(*names: str) -> float:
    return max(e.time for name in names for e in decode_body(capture_body(name)).events)


def shifted_body(name: str, shift: float) -> bytes:
    """A captured batch as if it happened `shift` seconds later (only the payload times move)."""
    items = capture_items(name)
    for item in items:
        for key in ("startTime", "endTime", "completionStartTime"):
            if isinstance(item.get(key), (int, float)):
                item[key] += shift
    return json.dumps(items).encode()


async def post_body(url: str, body: bytes) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/litellm/events", data=body,
                                headers={"Content-Type": "application/json"}) as r:
            assert r.status == 200, await r.text()


STORM = ("generic_api_no_deployments.json", "generic_api_bedrock_throttled.json", "generic_api_upstream_429.json")


async def test_429_storm_fires_and_resolves_the_quota_and_cooldown_rules(sidecar):
    """10 minutes of the captured 429 storm (all 3 gpt-lab accounts throttled, Bedrock throttled, the
    router refusing the group), one wave of it every 10 s, then quiet: the matching default rules go
    pending, fire, and resolve once."""
    gw, url, engine, recorder = sidecar
    logs = log_events("logs_no_deployments.jsonl")  # cooldowns + "No deployments available"
    base = last_time(*STORM)
    waves = 60
    seen_pending: set[tuple[str, str]] = set()
    for k in range(waves):
        for name in STORM:  # each capture moved to the wave's time
            await post_body(url, shifted_body(name, base - last_time(name) + 10.0 * k))
        gw.pipeline.publish([e.copy(time=base + 10.0 * k) for e in logs])
        await engine.evaluate_all(base + 10.0 * k + 5)
        seen_pending |= {a.labels["alertname"] for r, a in engine.active_alerts() if a.state == "pending"}
    end = base + 10.0 * (waves - 1) + 5
    # what the captures say should alert
    cooled = {e.deployment for e in logs if e.kind == "cooldown"}
    assert cooled == {"gpt-lab-acct111-use1", "gpt-lab-acct222-euw1", "gpt-lab-acct333-usw2"}
    failing = {i["model_id"] for n in STORM for i in capture_items(n) if i["model_id"] and i["status"] == "failure"}
    exhausted = {i["model_id"] for n in STORM for i in capture_items(n) if i["model_id"] and (
        i["hidden_params"]["additional_headers"] or {}).get("x_ratelimit_remaining_requests") == 0}
    assert exhausted == cooled | {"ratelimited-model-d"}
    no_tokens = {i["model_id"] for n in STORM for i in capture_items(n) if i["model_id"] and (
        i["hidden_params"]["additional_headers"] or {}).get("x_ratelimit_remaining_tokens") == 0}
    # every (provider, account, region) sees >= 20 throttled calls in 5 min (from wave 20 on)
    throttled_accounts = set()
    for n in STORM:
        for i in capture_items(n):
            if i["model_id"]:
                dep = gw.catalog.get(i["model_id"])
                throttled_accounts.add("/".join((i["custom_llm_provider"], dep.aws_account or "unknown",
                                                 dep.aws_region or "unknown")))
    bedrock = {i["model_id"] for i in capture_items(STORM[1])}
    expected = ({("DeploymentCooledDown", d) for d in cooled} | {("ModelGroupAllDeploymentsCooledDown", "gpt-lab")}
                | {("DeploymentConsecutiveFailures", d) for d in failing}
                | {("DeploymentErrorRatioHigh", d) for d in failing}
                | {("RemainingRequestsLow", d) for d in exhausted}
                | {("RemainingTokensLow", d) for d in no_tokens}
                | {("BedrockThrottling", d) for d in bedrock}
                | {("AccountRegionThrottled", a) for a in throttled_accounts})
    def key(a: Any) -> tuple[str, str]:
        if a.labels["alertname"] == "AccountRegionThrottled":
            return a.labels["alertname"], "/".join(a.labels[x] for x in ("api_provider", "aws_account", "aws_region"))
        return a.labels["alertname"], a.labels.get("deployment") or a.labels["model_group"]

    firing_now = {key(a) for r, a in engine.active_alerts() if a.state == "firing"}
    assert firing_now == expected
    # the rules with a `for` were pending first
    with_for = ("RemainingRequestsLow", "RemainingTokensLow", "BedrockThrottling", "AccountRegionThrottled",
                "DeploymentErrorRatioHigh")
    assert set(with_for) <= seen_pending
    refused = [a for r, a in engine.active_alerts() if a.labels["alertname"] == "ModelGroupAllDeploymentsCooledDown"]
    router_429s = sum(1 for i in capture_items(STORM[0]) if (i.get("error_information") or {}).get("error_class")
                      == "RouterRateLimitError")
    # each refusal is reported by the callback and by the log line: it counts once
    assert router_429s == sum(1 for e in logs if e.kind == "no_deployments")
    per_wave = router_429s
    assert refused[0].value in (29 * per_wave, 30 * per_wave)  # the 5 min window holds 29-30 waves
    status, body = await get(url, "/api/v1/alerts?state=firing")
    assert status == 200 and len(body["data"]["alerts"]) == len(expected)
    # the storm is over: everything resolves, once
    await step(engine, end + 15, end + 900)
    assert engine.active_alerts() == []
    fired = {a.fingerprint for a in recorder.alerts if a.state == "firing"}
    resolved = [a.fingerprint for a in recorder.alerts if a.state == "resolved"]
    assert len(fired) == len(expected) and sorted(resolved) == sorted(fired)


async def test_outage_fires_the_failure_rules_and_resolves(sidecar):
    _gw, url, engine, recorder = sidecar
    await post(url, "generic_api_outage.json", times=2)
    await post(url, "generic_api_outage_2.json", times=2)
    t0 = last_time("generic_api_outage.json", "generic_api_outage_2.json") + 5
    await engine.evaluate_all(t0)
    failed = {}
    for name in ("generic_api_outage.json", "generic_api_outage_2.json"):
        for item in capture_items(name):
            failed[item["model_id"]] = failed.get(item["model_id"], 0) + 2 * (item["status"] == "failure")
    assert failed == {"error-model-nofallback-d": 12, "bedrock-acct444-euc1": 12}
    streaks = {a.labels["deployment"]: a.value for a in recorder.alerts
               if a.labels["alertname"] == "DeploymentConsecutiveFailures"}
    assert streaks == failed
    status, body = await get(url, "/api/v1/alerts?alertname=DeploymentErrorRatioHigh")
    assert status == 200 and {(a["labels"]["deployment"], a["state"], a["value"]) for a in body["data"]["alerts"]} == {
        ("error-model-nofallback-d", "pending", 1.0), ("bedrock-acct444-euc1", "pending", 1.0)}
    await step(engine, t0 + 15, t0 + 120)
    ratio = [a for a in recorder.alerts if a.labels["alertname"] == "DeploymentErrorRatioHigh"]
    assert {a.labels["deployment"] for a in ratio if a.state == "firing"} == set(failed)
    assert ratio[0].fired_at == t0 + 120 and ratio[0].active_at == t0
    _, rules = await get(url, "/api/v1/rules")
    states = {r["name"]: r["state"] for g in rules["data"]["groups"] for r in g["rules"]}
    assert states["DeploymentErrorRatioHigh"] == states["DeploymentConsecutiveFailures"] == "firing"
    assert states["DeploymentSlowP95"] == "inactive"
    await step(engine, t0 + 135, t0 + 900)
    assert engine.active_alerts() == []
    assert {(a.labels["alertname"], a.labels["deployment"]) for a in recorder.alerts if a.state == "resolved"} == {
        (n, d) for n in ("DeploymentErrorRatioHigh", "DeploymentConsecutiveFailures") for d in failed}


async def test_cooldown_scenario(sidecar):
    gw, url, engine, recorder = sidecar
    await post(url, "generic_api_cooldown.json")
    gw.pipeline.publish(log_events("logs_cooldown.jsonl") + log_events("logs_no_deployments.jsonl"))
    cooldowns = [e for e in log_events("logs_no_deployments.jsonl") if e.kind == "cooldown"]
    t0 = max(e.time for e in cooldowns) + 1
    await step(engine, t0, t0 + 60)
    alerts = [a for a in recorder.alerts if a.labels["alertname"] == "DeploymentCooledDown"]
    assert {(a.labels["deployment"], a.labels["aws_account"], a.labels["aws_region"]) for a in alerts} == {
        ("gpt-lab-acct111-use1", "111111111111", "us-east-1"), ("gpt-lab-acct222-euw1", "222222222222", "eu-west-1"),
        ("gpt-lab-acct333-usw2", "333333333333", "us-west-2")}
    assert all(a.annotations["summary"].endswith("was put in cooldown 1 time(s) in 5m") for a in alerts)
    # LiteLLM's own health checks never count as traffic
    series = {rid: r.series() for rid, r in engine.rules.items()}
    assert series["deployments/DeploymentErrorRatioHigh"] == len({i["model_id"] for i in capture_items(
        "generic_api_cooldown.json")})
    await post(url, "generic_api_health.json")
    await post(url, "generic_api_health_2.json")
    assert {rid: r.series() for rid, r in engine.rules.items()} == series
    await step(engine, t0 + 75, t0 + 600)
    assert {a.labels["deployment"] for a in recorder.alerts if a.state == "resolved"
            and a.labels["alertname"] == "DeploymentCooledDown"} == {"gpt-lab-acct111-use1", "gpt-lab-acct222-euw1",
                                                                    "gpt-lab-acct333-usw2"}


async def test_api_shapes_and_auth(gatewatch_server, lab_environ):
    _gw, url = await gatewatch_server({"server": {"auth_token": "s3cret-token"}})
    assert (await get(url, "/api/v1/rules"))[0] == 401
    status, body = await get(url, "/api/v1/rules", "s3cret-token")
    assert status == 200 and body["status"] == "success"
    groups = {g["name"]: g for g in body["data"]["groups"]}
    assert set(groups) == {"bedrock-quota", "budget", "deployments", "latency", "litellm", "quota"}
    slow = next(r for r in groups["latency"]["rules"] if r["name"] == "DeploymentSlowP95")
    assert slow["aggregate"] == "p95" and slow["over"] == 300 and slow["for"] == 300 and slow["state"] == "inactive"
    assert slow["file"].endswith("rules/latency.yml") and slow["line"] > 0 and slow["health"] in ("unknown", "ok")
    budget = next(r for r in groups["budget"]["rules"] if r["name"] == "TeamMonthlyBudget")
    assert budget["budget"]["period"] == "month" and budget["scope"] == "global"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/-/reload") as r:
            assert r.status == 401
        async with session.post(f"{url}/-/reload", headers={"Authorization": "Bearer s3cret-token"}) as r:
            assert r.status == 200 and (await r.json())["data"]["kept"] == 29
    status, body = await get(url, "/api/v1/alerts", "s3cret-token")
    assert status == 200 and body == {"status": "success", "data": {"alerts": []}}


async def test_reload_through_the_api(gatewatch_server, tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(textwrap.dedent("""\
        groups:
          - name: g
            rules:
              - alert: Errors
                signal: errors
                by: [deployment]
                above: 0
                keep_firing_for: 10m
        """))
    config = tmp_path / "gatewatch.yml"
    config.write_text(yaml.safe_dump({"rules": [str(rules)], "state_dir": str(tmp_path / "state")}))
    from agent.config import load_config

    gw, url = await gatewatch_server({"rules": [str(rules)]})
    gw.config = load_config(str(config))  # as if started with --config (reload re-reads it)
    engine = gw.rule_engine
    await engine.pause()
    await post(url, "generic_api_upstream_500.json")
    t0 = last_time("generic_api_upstream_500.json") + 1
    await engine.evaluate_all(t0)
    [before] = (await get(url, "/api/v1/alerts"))[1]["data"]["alerts"]
    rules.write_text(rules.read_text() + "      - alert: Extra\n        signal: requests\n        above: 1000\n")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/-/reload") as r:
            body = await r.json()
            assert r.status == 200 and (body["data"]["kept"], body["data"]["added"]) == (1, 1)
        [after] = (await get(url, "/api/v1/alerts"))[1]["data"]["alerts"]
        assert after == before  # same alert, same activeAt
        rules.write_text("groups:\n  - name: g\n    rules:\n      - alert: Errors\n        signal: errors\n"
                         "        aggregate: p95x\n        above: 0\n")
        async with session.post(f"{url}/-/reload") as r:
            body = await r.json()
            assert r.status == 400 and f"{rules}:6: groups[0].rules[0].aggregate: bad percentile" in body["error"]
        assert len(engine.rules) == 2  # the previous rules keep running
        config.write_text("rules: [")
        async with session.post(f"{url}/-/reload") as r:
            assert r.status == 400 and "invalid YAML" in (await r.json())["error"]


async def test_self_metrics_on_the_metrics_endpoint(sidecar):
    _gw, url, engine, _recorder = sidecar
    await post(url, "generic_api_outage.json")
    await engine.evaluate_all(last_time("generic_api_outage.json") + 1)
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as r:
        text = await r.text()
    from tests.promtext import total

    assert total(text, "gatewatch_alerts", alertname="DeploymentConsecutiveFailures", severity="critical",
                 state="firing") == 1
    assert total(text, "gatewatch_rule_evaluations_total", group="deployments") == 1
    assert total(text, "gatewatch_rule_evaluation_duration_seconds_count", group="latency") == 1
    assert total(text, "gatewatch_rules_loaded") == 29


@pytest.mark.slow
async def test_sighup_reloads_rules_of_a_running_sidecar(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        signal: errors\n"
                     "        above: 1\n")
    config = tmp_path / "gatewatch.yml"
    config.write_text(yaml.safe_dump({"rules": [str(rules)], "state_dir": str(tmp_path / "state"),
                                      "attribution": {"ecs_metadata": False}}))
    port = free_port()
    log_file = tmp_path / "stderr.log"
    with log_file.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.cli", "run", "--config", str(config), "--host", "127.0.0.1", "--port",
            str(port), cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"

    async def names() -> list[str] | None:
        try:
            _, body = await get(url, "/api/v1/rules")
        except aiohttp.ClientError:
            return None
        return [r["name"] for g in body["data"]["groups"] for r in g["rules"]]

    async def wait_for(expected: list[str]) -> None:
        deadline = time.monotonic() + 90  # a generous ceiling: a busy machine starts a process slowly
        while time.monotonic() < deadline:
            if await names() == expected:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"rules never became {expected}: {await names()}")

    try:
        await wait_for(["A"])
        rules.write_text(rules.read_text() + "      - alert: B\n        signal: requests\n        above: 1\n")
        proc.send_signal(signal.SIGHUP)
        await wait_for(["A", "B"])
        rules.write_text("groups: [")  # broken: keeps A and B
        proc.send_signal(signal.SIGHUP)
        # the refusal is logged once the reload has run: only then is "still A and B" a finding
        await async_wait_until(lambda: "rules reload refused" in log_file.read_text(), within=60, interval=0.1)
        assert await names() == ["A", "B"]
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=30)
    err = log_file.read_text()
    assert proc.returncode == 0, err
    assert "rules reload refused, keeping the 2 running rules" in err and "invalid YAML" in err


async def test_a_bad_rule_file_stops_the_start_with_its_location(tmp_path):
    from agent.app import GatewatchApp
    from agent.config import parse_config
    from agent.configtypes import ConfigError

    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        signal: errors\n        above: 1\n"
                   "        for: soon\n")
    gw = GatewatchApp(parse_config({"rules": [str(bad)], "state_dir": str(tmp_path / "s"),
                                    "attribution": {"ecs_metadata": False}}))
    with pytest.raises(ConfigError) as info:
        await gw.start()
    assert f"{bad}:7: groups[0].rules[0].for: expected a duration" in str(info.value)
    await gw.stop()


def test_check_config_validates_the_rules(tmp_path, capsys):
    from agent.cli import main

    rules = tmp_path / "r.yml"
    rules.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        signal: errors\n        above: 1\n")
    config = tmp_path / "gatewatch.yml"
    config.write_text(yaml.safe_dump({"rules": [str(rules), "default"], "attribution": {"ecs_metadata": False},
                                      "state_dir": str(tmp_path / "s")}))
    assert main(["check-config", str(config)]) == 0
    assert "rules: 30 rules in 7 groups from 7 files" in capsys.readouterr().out
    rules.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        signal: errorz\n        above: 1\n")
    assert main(["check-config", str(config)]) == 1
    assert f"{rules}:5: groups[0].rules[0].signal: unknown signal 'errorz'" in capsys.readouterr().err


async def test_group_loops_evaluate_on_their_own(gatewatch_server, tmp_path):
    rules = tmp_path / "fast.yml"
    rules.write_text(textwrap.dedent("""\
        groups:
          - name: fast
            interval: 200ms
            rules:
              - alert: OutageSeen
                signal: errors
                over: 1h            # the capture is posted as if it had just happened
                by: [deployment]
                above: 5
                labels: {severity: critical}
        """))
    gw, url = await gatewatch_server({"rules": [str(rules)]})
    recorder = Recorder()
    gw.alert_receiver = recorder
    # moved to now: a window over the capture's own dates would empty as the capture ages
    items = capture_items("generic_api_outage.json")
    shift = time.time() - 5.0 - max(item["endTime"] for item in items)
    for item in items:
        for key in ("startTime", "endTime", "completionStartTime"):
            if isinstance(item.get(key), (int, float)):
                item[key] += shift
    await post_body(url, json.dumps(items).encode())
    # the group's own loop fires it (nothing here evaluates); the ceiling is for a busy machine
    await async_wait_until(lambda: bool(recorder.names("firing")), within=60, interval=0.05)
    assert recorder.names("firing") == {("OutageSeen", "error-model-nofallback-d")}
    _, body = await get(url, "/api/v1/alerts")
    [alert] = body["data"]["alerts"]
    assert alert["state"] == "firing" and alert["value"] == 6 and alert["labels"]["severity"] == "critical"
