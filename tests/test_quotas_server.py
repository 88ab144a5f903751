"""Bedrock quota headroom through a running gatewatch server with the lab LiteLLM config.

Real pieces: a local Service Quotas endpoint (awsJson1.1) reached through
AWS_ENDPOINT_URL_SERVICE_QUOTAS, moto's server for STS (the role deployment's
aws_sts_endpoint) and CloudWatch (AWS/Bedrock metrics seeded there), the captured Bedrock
callback payloads posted to the ingest route. The default rule BedrockQuotaHeadroomLow
fires once through the proxy's own traffic, once through account-wide use only CloudWatch
saw, once through reservations of requests sent without max_tokens.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest

from tests.conftest import FIXTURES, ROOT, capture_items, free_port
from tests.promtext import samples
from tests.servicequotas_support import FakeServiceQuotas

pytestmark = pytest.mark.integration

HAIKU = "Anthropic Claude 3 Haiku"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
TPM = 10000.0


def quota_rows(prefix: str) -> list[tuple[str, str, float]]:
    return [(f"On-demand InvokeModel tokens per minute for {HAIKU}", f"L-{prefix}01", TPM),
            (f"On-demand InvokeModel requests per minute for {HAIKU}", f"L-{prefix}02", 1000.0),
            (f"Model invocation max tokens per day for {HAIKU}", f"L-{prefix}03", TPM * 1440),
            ("On-demand InvokeModel tokens per minute for Anthropic Claude 3.5 Sonnet", f"L-{prefix}04", 1.0)]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_url: str, lab_environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServiceQuotas]:
    fake = FakeServiceQuotas(quotas={"eu-central-1": quota_rows("EUC1"), "ap-southeast-2": quota_rows("APS2"),
                                     "us-east-1": quota_rows("USE1")})
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)  # STS (default endpoint) and CloudWatch
    monkeypatch.setenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS", fake.start())
    monkeypatch.setenv("STS_ENDPOINT", moto_url)  # the role deployment's aws_sts_endpoint
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # the "task role"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    yield fake
    fake.stop()


def fast_rules(tmp_path: Path) -> str:
    """The shipped rule file with test-sized timings (the real 5m `for` is covered by rules/tests)."""
    text = (ROOT / "rules" / "bedrock_quota.yml").read_text()
    text = text.replace("interval: 15s", "interval: 1s").replace("for: 5m", "for: 2s").replace("for: 1m", "for: 2s")
    path = tmp_path / "bedrock_quota.yml"
    path.write_text(text)
    return str(path)


def gateway_config(tmp_path: Path, litellm_config: Path = FIXTURES / "config.yaml") -> dict[str, Any]:
    return {"litellm": {"config": str(litellm_config)}, "attribution": {"ecs_metadata": False},
            "rules": [fast_rules(tmp_path)],
            "quotas": {"enabled": True, "evaluate_interval": "1s", "account_usage_interval": 0}}


def bedrock_items(deployment: str, n: int, prompt: int, completion: int, max_tokens: int | None) -> list[dict]:
    """The captured Bedrock success payload, re-timed to now, with the tokens of the scenario."""
    [template] = [i for i in capture_items("generic_api_bedrock_success.json") if i["status"] == "success"][:1]
    now = time.time()
    out = []
    for k in range(n):
        item = copy.deepcopy(template)
        item["model_id"] = deployment
        item["id"] = item["litellm_call_id"] = f"{deployment}-{k}-{now}"
        item["startTime"], item["endTime"] = now - 0.5, now
        item["prompt_tokens"], item["completion_tokens"] = prompt, completion
        item["total_tokens"] = prompt + completion
        params = dict(item.get("model_parameters") or {})
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        item["model_parameters"] = params
        out.append(item)
    return out


async def post_events(url: str, items: list[dict]) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/litellm/events", data=json.dumps(items)) as response:
            body = await response.json()
            assert response.status == 200 and body["accepted"] == len(items), body


async def get_json(url: str, path: str) -> Any:
    async with aiohttp.ClientSession() as session:
        async with session.get(url + path) as response:
            assert response.status == 200
            return await response.json()


async def metrics_text(url: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/metrics") as response:
            return await response.text()


async def until(predicate: Callable[[], Any], within: float = 40.0, what: str = "") -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def value(text: str, name: str, **labels: str) -> float | None:
    """The one sample of `name` whose labels include `labels`; None when there is none."""
    found = [v for n, ls, v in samples(text) if n == name and all(ls.get(k) == x for k, x in labels.items())]
    assert len(found) <= 1, found
    return found[0] if found else None


def headroom_alerts(body: dict[str, Any], account: str) -> list[dict[str, Any]]:
    return [a for a in body["data"]["alerts"] if a["labels"].get("alertname") == "BedrockQuotaHeadroomLow"
            and a["labels"].get("aws_account") == account]


async def firing_headroom(url: str, account: str) -> list[dict[str, Any]]:
    body = await get_json(url, "/api/v1/alerts")
    return [a for a in headroom_alerts(body, account) if a["state"] == "firing"]


async def started(gatewatch_server: Any, tmp_path: Path, litellm_config: Path = FIXTURES / "config.yaml") -> Any:
    gw, url = await gatewatch_server(gateway_config(tmp_path, litellm_config))
    await until(lambda: _matched(gw), what="Service Quotas read for both Bedrock accounts")
    return gw, url


async def _matched(gw: Any) -> bool:
    return {"bedrock-acct444-euc1", "bedrock-acct555-apse2"} <= set(gw.quotas.matches)


async def test_each_bedrock_deployment_shows_its_account_region_quota(aws, gatewatch_server, tmp_path):
    gw, url = await started(gatewatch_server, tmp_path)
    matched = gw.quotas.matches
    assert {q: (m.code, m.value) for q, m in matched["bedrock-acct444-euc1"].items()} == {
        "tokens_per_minute": ("L-EUC101", TPM), "requests_per_minute": ("L-EUC102", 1000.0),
        "tokens_per_day": ("L-EUC103", TPM * 1440)}
    assert matched["bedrock-acct555-apse2"]["tokens_per_minute"].code == "L-APS201"
    # the role deployment's quotas were read with the role's credentials from moto's STS, not the static keys
    by_region = {c.region: c.access_key for c in aws.list_calls()}
    assert by_region["eu-central-1"] == "AKIAFAKEFAKEFAKEFAKE"
    assert by_region["ap-southeast-2"].startswith("ASIA")
    text = await until(lambda: _has(url, 'gatewatch_quota_limit{aws_account="555555555555"',
                                    'gatewatch_quota_limit{aws_account="444444444444"'), what="limit gauges")
    assert value(text, "gatewatch_quota_limit", aws_account="444444444444", aws_region="eu-central-1", model=MODEL,
                 quota="tokens_per_minute", inference="on_demand") == TPM
    # the lab's bedrock-throttled deployment names no account: reported, not guessed
    [unmatched] = [u for u in gw.quotas.unmatched if u.deployment == "bedrock-throttled-use1"]
    assert "no AWS account/region attributed" in unmatched.reason
    body = await until(lambda: _alerts_named(url, "BedrockQuotaUnmatched"), what="unmatched warning")
    assert {a["labels"]["deployment"] for a in body} == {"bedrock-throttled-use1"}


async def _has(url: str, *needles: str) -> str | None:
    text = await metrics_text(url)
    return text if all(n in text for n in needles) else None


async def _alerts_named(url: str, name: str) -> list[dict[str, Any]]:
    body = await get_json(url, "/api/v1/alerts")
    return [a for a in body["data"]["alerts"] if a["labels"].get("alertname") == name and a["state"] == "firing"]


async def test_proxy_traffic_moves_utilization_and_fires_the_rule(aws, gatewatch_server, tmp_path):
    gw, url = await started(gatewatch_server, tmp_path)
    # 3 calls of 1000 tokens with max_tokens = what they produced: 30 % of 10000 TPM
    await post_events(url, bedrock_items("bedrock-acct444-euc1", 3, prompt=800, completion=200, max_tokens=200))

    async def utilization() -> float | None:
        rows = [r for r in gw.quotas.rows if r.aws_account == "444444444444" and r.quota == "tokens_per_minute"]
        return rows[0].utilization if rows and rows[0].utilization > 0 else None

    first = await until(utilization, what="utilization after traffic")
    assert 0.2 < first <= 0.3 + 1e-9
    assert await firing_headroom(url, "444444444444") == []
    # 9 more: 120 % of the quota in the minute -> the rule fires, on the completed view
    await post_events(url, bedrock_items("bedrock-acct444-euc1", 9, prompt=800, completion=200, max_tokens=200))
    [alert] = await until(lambda: firing_headroom(url, "444444444444"), what="BedrockQuotaHeadroomLow firing")
    assert alert["labels"]["view"] == "completed"
    assert alert["labels"]["quota"] == "tokens_per_minute" and alert["labels"]["quota_code"] == "L-EUC101"
    assert "completed view" in alert["annotations"]["summary"]
    assert "--quota-code L-EUC101" in alert["annotations"]["runbook"]
    assert "--region eu-central-1" in alert["annotations"]["runbook"]
    text = await metrics_text(url)
    assert value(text, "gatewatch_quota_requests_without_max_tokens_total", aws_account="444444444444") is None
    assert value(text, "gatewatch_quota_view_utilization_ratio", aws_account="444444444444",
                 quota="tokens_per_minute", view="completed") > 0.8


async def test_reservations_without_max_tokens_fire_the_rule(aws, gatewatch_server, tmp_path):
    gw, url = await started(gatewatch_server, tmp_path)
    # 3 small calls (110 tokens each) without max_tokens: Bedrock reserved 100 + 4096 (Claude 3 Haiku's max output)
    await post_events(url, bedrock_items("bedrock-acct555-apse2", 3, prompt=100, completion=10, max_tokens=None))
    [alert] = await until(lambda: firing_headroom(url, "555555555555"), what="headroom alert on reservations")
    assert alert["labels"]["view"] == "reserved"
    assert "max_tokens" in alert["annotations"]["description"]
    [row] = [r for r in gw.quotas.rows if r.aws_account == "555555555555" and r.quota == "tokens_per_minute"]
    assert row.use["completed"] <= 330 + 1e-9  # what really completed: 3 % of the quota
    assert row.use["reserved"] > 0.8 * TPM
    text = await metrics_text(url)
    assert value(text, "gatewatch_quota_requests_without_max_tokens_total", aws_account="555555555555",
                 aws_region="ap-southeast-2", model=MODEL, inference="on_demand") == 3.0


async def test_account_wide_use_seen_only_in_cloudwatch_fires_the_rule(aws, moto_url, gatewatch_server, tmp_path):
    # another application used 95 % of account 444's quota this minute: the proxy never saw it
    cloudwatch = boto3.client("cloudwatch", region_name="eu-central-1", endpoint_url=moto_url,
                              aws_access_key_id="AKIAFAKEFAKEFAKEFAKE", aws_secret_access_key="x" * 40)
    stamp = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    cloudwatch.put_metric_data(Namespace="AWS/Bedrock", MetricData=[
        {"MetricName": "EstimatedTPMQuotaUsage", "Dimensions": [{"Name": "ModelId", "Value": MODEL}],
         "Timestamp": stamp, "Value": 0.95 * TPM},
        {"MetricName": "InvocationThrottles", "Dimensions": [{"Name": "ModelId", "Value": MODEL}],
         "Timestamp": stamp, "Value": 4.0},
        {"MetricName": "Invocations", "Dimensions": [{"Name": "ModelId", "Value": MODEL}],
         "Timestamp": stamp, "Value": 50.0}])
    gw, url = await started(gatewatch_server, tmp_path)
    await gw.quotas.refresh_account_use()  # the minute loop, run now
    assert gw.quotas.calls.get(("get_metric_data", "ok"), 0) >= 1
    [alert] = await until(lambda: firing_headroom(url, "444444444444"), what="headroom alert on account-wide use")
    assert alert["labels"]["view"] == "account"
    [row] = [r for r in gw.quotas.rows if r.aws_account == "444444444444" and r.quota == "tokens_per_minute"]
    assert row.use == {"completed": 0.0, "reserved": 0.0, "account": 0.95 * TPM}
    text = await metrics_text(url)
    assert value(text, "gatewatch_quota_account_throttles", aws_account="444444444444", aws_region="eu-central-1",
                 model=MODEL) == 4.0
    assert os.environ["AWS_ENDPOINT_URL"] == moto_url


def _quotas_show(tmp_path: Path, litellm_config: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "gw.yaml"
    config.write_text(f"litellm: {{config: {litellm_config}}}\nattribution: {{ecs_metadata: false}}\n"
                      f"state_dir: {tmp_path / 'state'}\n")
    return subprocess.run([sys.executable, "-m", "agent.cli", "quotas", "show", "--config", str(config), "--json"],
                          capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=120)


def test_quotas_show_with_the_e2e_config_matches_every_bedrock_deployment(aws, tmp_path):
    result = _quotas_show(tmp_path, ROOT / "tests" / "e2e" / "litellm_config.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {r["deployment"]: r for r in json.loads(result.stdout)["deployments"]}
    assert set(rows) == {"bedrock-acct444-euc1", "bedrock-acct555-apse2", "bedrock-throttled-acct999-use1"}
    assert {d: (r["aws_account"], r["aws_region"], r["quotas"]["tokens_per_minute"]["code"])
            for d, r in rows.items()} == {
        "bedrock-acct444-euc1": ("444444444444", "eu-central-1", "L-EUC101"),
        "bedrock-acct555-apse2": ("555555555555", "ap-southeast-2", "L-APS201"),
        "bedrock-throttled-acct999-use1": ("999999999999", "us-east-1", "L-USE101")}
    assert rows["bedrock-acct555-apse2"]["credentials"].startswith(
        "deployment role arn:aws:iam::555555555555:role/litellm-bedrock-invoke")
    assert "fakefake" not in result.stdout  # the static secret key never shows


def test_quotas_show_says_why_a_deployment_has_no_quota(aws, tmp_path):
    result = _quotas_show(tmp_path, FIXTURES / "config.yaml")
    assert result.returncode == 1, result.stdout + result.stderr
    rows = {r["deployment"]: r for r in json.loads(result.stdout)["deployments"]}
    assert rows["bedrock-throttled-use1"]["quotas"] == {}
    assert rows["bedrock-throttled-use1"]["reason"].startswith("no AWS account/region attributed")
    assert rows["bedrock-acct444-euc1"]["reason"] == ""


def test_service_quotas_errors_keep_the_last_values_and_are_counted(aws, tmp_path):
    from agent.config import parse_config
    from agent.enrich import catalog_from_config_text
    from agent.quotas.service import QuotaService
    from agent.quotas.usage import UsageRecorder

    text = (FIXTURES / "config.yaml").read_text()
    catalog = catalog_from_config_text(text)
    cfg = parse_config({"quotas": {"enabled": True, "max_attempts": 2}}).quotas
    service = QuotaService(cfg, catalog, lambda: text, lambda events: None, UsageRecorder())

    async def run() -> None:
        assert await service.refresh_limits() is False
        before = dict(service.matches)
        aws.throttle_next = 100  # every call throttled past botocore's attempts
        assert await service.refresh_limits() is True
        assert service.matches == before  # last known values kept
        assert service.calls[("list_service_quotas", "error")] == 2
        assert service.throttled["list_service_quotas"] >= 2
        assert "ThrottlingException" in service.limit_errors[("444444444444", "eu-central-1")]
        aws.throttle_next = 0
        assert await service.refresh_limits() is False and service.limit_errors == {}

    asyncio.run(run())


async def test_the_same_numbers_reach_cloudwatch(aws, moto_url, gatewatch_server, tmp_path):
    data = gateway_config(tmp_path)
    data["cloudwatch"] = {"enabled": True, "mode": "api", "region": "eu-west-1", "interval": "1s",
                          "namespace": "GatewatchQuotaTest"}
    gw, url = await gatewatch_server(data)
    await until(lambda: _matched(gw), what="Service Quotas read")
    await post_events(url, bedrock_items("bedrock-acct444-euc1", 5, prompt=800, completion=200, max_tokens=200))
    client = boto3.client("cloudwatch", region_name="eu-west-1", endpoint_url=moto_url,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    want = {"AwsAccount": "444444444444", "AwsRegion": "eu-central-1", "Model": MODEL, "Quota": "tokens_per_minute",
            "Inference": "on_demand"}

    async def utilization_in_cloudwatch() -> float | None:
        def read() -> float | None:
            stats = client.get_metric_statistics(
                Namespace="GatewatchQuotaTest", MetricName="QuotaUtilization", Statistics=["Maximum"], Period=60,
                Dimensions=[{"Name": k, "Value": v} for k, v in want.items()],
                StartTime=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
                EndTime=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
            points = [p["Maximum"] for p in stats["Datapoints"]]
            return max(points) if points and max(points) >= 0.5 else None
        return await asyncio.get_running_loop().run_in_executor(None, read)

    assert await until(utilization_in_cloudwatch, what="QuotaUtilization in CloudWatch") == pytest.approx(0.5)
    names = {m["MetricName"] for m in client.list_metrics(Namespace="GatewatchQuotaTest")["Metrics"]}
    assert {"QuotaLimit", "QuotaUtilization", "QuotaUtilizationCompleted", "QuotaUtilizationReserved"} <= names


def test_cloudwatch_dashboard_has_headroom_widgets_when_quotas_are_on(moto_url, monkeypatch, tmp_path, capsys):
    from agent.cli import main
    from agent.sinks.cloudwatch_dashboard import dashboard_body

    config = tmp_path / "gw.yaml"
    config.write_text("cloudwatch: {namespace: Gateway, region: eu-central-1}\nquotas: {enabled: true}\n")
    assert main(["cloudwatch", "dashboard", "--config", str(config)]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body == dashboard_body("Gateway", "eu-central-1", quotas=True)
    quota = [w for w in body["widgets"] if w["type"] == "metric" and "Bedrock quota" in w["properties"]["title"]]
    assert len(quota) == 3
    expressions = [line["expression"] for w in quota for (line,) in w["properties"]["metrics"]]
    assert all('{"Gateway",AwsAccount,AwsRegion,Model,Quota,Inference}' in e for e in expressions)
    assert {e.split('MetricName="')[1].split('"')[0] for e in expressions} == {
        "QuotaUtilization", "QuotaUtilizationCompleted", "QuotaUtilizationReserved", "QuotaUtilizationAccount",
        "QuotaLimit"}
    assert not [w for w in dashboard_body("Gateway", "eu-central-1")["widgets"]
                if "Bedrock quota" in w.get("properties", {}).get("title", "")]
    cw = boto3.client("cloudwatch", region_name="eu-central-1", endpoint_url=moto_url,
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    cw.put_dashboard(DashboardName="gatewatch-quotas", DashboardBody=json.dumps(body))
    assert json.loads(cw.get_dashboard(DashboardName="gatewatch-quotas")["DashboardBody"]) == body


async def test_a_new_bedrock_deployment_in_the_catalog_is_read_without_waiting_an_hour(aws, gatewatch_server,
                                                                                      tmp_path):
    from agent.enrich import catalog_from_config_text

    gw, _url = await started(gatewatch_server, tmp_path)
    reads = len(aws.list_calls())
    head, tail = (FIXTURES / "config.yaml").read_text().split("\nrouter_settings:")
    config = head.rstrip("\n") + """
  - model_name: bedrock-new
    litellm_params:
      model: bedrock/us.anthropic.claude-3-haiku-20240307-v1:0
      aws_region_name: us-east-1
      tags: ["aws_account:777777777777"]
    model_info:
      id: bedrock-new-use1
""" + "\nrouter_settings:" + tail
    gw.catalog.replace(catalog_from_config_text(config))

    async def matched_new() -> bool:
        return bool(gw.quotas.matches.get("bedrock-new-use1"))

    await until(matched_new, what="the new deployment's quotas")
    [new] = [d for d in gw.quotas.plan.deployments if d.deployment == "bedrock-new-use1"]
    assert (new.aws_account, new.aws_region, new.ref.inference) == ("777777777777", "us-east-1", "cross_region")
    assert len(aws.list_calls()) > reads
    # a us. profile draws on the Cross-Region rows, which the fake account lacks: only the daily quota matches
    assert set(gw.quotas.matches["bedrock-new-use1"]) == {"tokens_per_day"}
