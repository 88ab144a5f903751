"""Config, rules and the LiteLLM config from S3 (moto's server): changes picked up by ETag,
broken changes refused with the running version kept, nothing downloaded when unchanged."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from aiohttp.test_utils import TestServer

from agent.app import GatewatchApp
from agent.config import Config, load_config, read_text
from agent.configtypes import ConfigError
from agent.parse.litellm import decode_body
from agent.s3 import list_s3_keys
from tests.conftest import FIXTURES, capture_items, free_port

pytestmark = pytest.mark.integration

FAST = "200ms"
LITELLM_CONFIG = (FIXTURES / "config.yaml").read_text()


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env["AWS_ENDPOINT_URL"]
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


class S3Bucket:
    def __init__(self, endpoint: str, name: str) -> None:
        self.client = boto3.client("s3", endpoint_url=endpoint)
        self.name = name
        self.client.create_bucket(Bucket=name)

    def put(self, key: str, text: str) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=text.encode())

    def url(self, key: str) -> str:
        return f"s3://{self.name}/{key}"


class GetObjectLog:
    """What gatewatch's own S3 client did: GetObject answers by key and HTTP status."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, int]] = Counter()
        boto3.setup_default_session()
        assert boto3.DEFAULT_SESSION is not None
        boto3.DEFAULT_SESSION.events.register("after-call.s3.GetObject", self._seen)

    def _seen(self, http_response: Any, context: Any = None, **kwargs: Any) -> None:
        key = http_response.url.split("?", 1)[0].rsplit("/", 1)[-1] if hasattr(http_response, "url") else "?"
        self.calls[(key, http_response.status_code)] += 1

    def count(self, key_suffix: str, status: int) -> int:
        return sum(n for (key, code), n in self.calls.items() if key_suffix.endswith(key) and code == status)


class RuleFilesHook:
    """Stands in for the rule engine's reload hook (agent/rules registers the real one):
    re-reads every rule file on each call, refuses a file that is not a rule file by raising
    ConfigError and keeps the rules it had, as the refresh contract asks."""

    def __init__(self, locations: list[str]) -> None:
        self.locations = locations
        self.calls = 0
        self.loaded = self._load(locations)

    @staticmethod
    def _load(locations: list[str]) -> dict[str, list[str]]:
        loaded: dict[str, list[str]] = {}
        for location in locations:
            for url in list_s3_keys(location):
                text = read_text(url)
                try:
                    data = yaml.safe_load(text)
                except yaml.YAMLError as exc:
                    raise ConfigError("", f"invalid YAML: {exc}", url) from None
                if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
                    raise ConfigError("groups", "expected a list of rule groups", url)
                loaded[url] = [g["name"] for g in data["groups"]]
        return loaded

    async def __call__(self, config: Config) -> None:
        self.calls += 1
        loaded = await asyncio.get_running_loop().run_in_executor(None, self._load, list(config.rules or []))
        self.loaded = loaded


async def until(predicate: Callable[[], bool], within: float = 20.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.05)


def metric(gw: GatewatchApp, name: str, **labels: str) -> float:
    return gw.registry.get_sample_value(name, labels) or 0.0


def reloads(gw: GatewatchApp, source: str, outcome: str) -> float:
    return metric(gw, "gatewatch_config_reloads_total", source=source, outcome=outcome)


def checks(gw: GatewatchApp, source: str, result: str) -> float:
    return metric(gw, "gatewatch_config_checks_total", source=source, result=result)


@pytest.fixture
async def started_app(tmp_path: Path):
    servers: list[TestServer] = []

    async def start(config_url: str, hooks: list | None = None) -> GatewatchApp:
        config = load_config(config_url)
        config.prometheus.process_metrics = False
        gw = GatewatchApp(config)
        gw.reload_hooks.extend(hooks or [])
        server = TestServer(gw.web_app(), host="127.0.0.1", port=free_port())
        await server.start_server()
        servers.append(server)
        await gw.refresher.wait_baselined()
        return gw

    yield start
    for server in servers:
        await server.close()


def gatewatch_yaml(tmp_path: Path, bucket: S3Bucket, series_limit: Any = 5000, rules: bool = False) -> str:
    data: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "refresh": {"interval": FAST},
        "labels": {"series_limit": series_limit},
        "litellm": {"config": bucket.url("litellm/config.yaml"), "config_refresh": FAST},
    }
    if rules:
        data["rules"] = [bucket.url("rules/")]
    return yaml.safe_dump(data)


async def test_config_change_by_etag_and_broken_change_refused(moto_endpoint, lab_environ, tmp_path, started_app,
                                                               caplog):
    bucket = S3Bucket(moto_endpoint, "gw-config")
    bucket.put("litellm/config.yaml", LITELLM_CONFIG)
    bucket.put("gatewatch.yaml", gatewatch_yaml(tmp_path, bucket))
    gets = GetObjectLog()
    seen: list[int] = []

    async def hook(config: Config) -> None:
        seen.append(config.labels.series_limit)

    gw = await started_app(bucket.url("gatewatch.yaml"), [hook])
    assert gw.config.labels.series_limit == 5000

    # unchanged: checks answered 304 without a body, nothing reloaded
    await until(lambda: checks(gw, "config", "unchanged") >= 3, what="unchanged config checks")
    assert gets.count("gatewatch.yaml", 304) >= 3
    assert gets.count("gatewatch.yaml", 200) == 2  # load_config at start + the refresher's baseline
    assert reloads(gw, "config", "ok") == 0 and seen == []

    # a real change is applied and the reload hooks see the new config
    bucket.put("gatewatch.yaml", gatewatch_yaml(tmp_path, bucket, series_limit=7000))
    await until(lambda: reloads(gw, "config", "ok") == 1, what="config reload")
    assert gw.config.labels.series_limit == 7000 and seen == [7000]
    assert metric(gw, "gatewatch_config_last_reload_successful", source="config") == 1

    # a broken change is refused, the running config stays, the error names file and key path
    caplog.set_level(logging.ERROR, logger="agent.refresh")
    bucket.put("gatewatch.yaml", gatewatch_yaml(tmp_path, bucket, series_limit="lots"))
    await until(lambda: reloads(gw, "config", "error") == 1, what="refused config")
    assert gw.config.labels.series_limit == 7000 and seen == [7000]
    assert metric(gw, "gatewatch_config_last_reload_successful", source="config") == 0
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused and "s3://gw-config/gatewatch.yaml" in refused[0] and "labels.series_limit" in refused[0]

    # the broken version is not fetched and refused again on every check
    before = checks(gw, "config", "unchanged")
    await until(lambda: checks(gw, "config", "unchanged") >= before + 3, what="checks after the refusal")
    assert reloads(gw, "config", "error") == 1

    # invalid YAML is refused the same way
    bucket.put("gatewatch.yaml", "labels: [unclosed\n")
    await until(lambda: reloads(gw, "config", "error") == 2, what="refused YAML")
    assert gw.config.labels.series_limit == 7000

    # a good version afterwards is taken, and the gauge recovers
    bucket.put("gatewatch.yaml", gatewatch_yaml(tmp_path, bucket, series_limit=9000))
    await until(lambda: reloads(gw, "config", "ok") == 2, what="second reload")
    assert gw.config.labels.series_limit == 9000 and seen == [7000, 9000]
    assert metric(gw, "gatewatch_config_last_reload_successful", source="config") == 1

    # a new version that changes only a comment is fetched (new ETag) but reloads nothing
    bucket.put("gatewatch.yaml", gatewatch_yaml(tmp_path, bucket, series_limit=9000) + "# comment only\n")
    await until(lambda: gets.count("gatewatch.yaml", 200) >= 7, what="fetch of the comment-only change")
    await asyncio.sleep(0.3)
    assert reloads(gw, "config", "ok") == 2 and seen == [7000, 9000]


async def test_rules_change_by_etag_and_broken_rule_file_refused(moto_endpoint, lab_environ, tmp_path,
                                                                 started_app):
    bucket = S3Bucket(moto_endpoint, "gw-rules")
    bucket.put("litellm/config.yaml", LITELLM_CONFIG)
    bucket.put("rules/latency.yml", yaml.safe_dump({"groups": [{"name": "latency", "rules": []}]}))
    bucket.put("gatewatch.yaml", gatewatch_yaml(tmp_path, bucket, rules=True))
    rules = RuleFilesHook([bucket.url("rules/")])
    gw = await started_app(bucket.url("gatewatch.yaml"), [rules])
    assert rules.loaded == {bucket.url("rules/latency.yml"): ["latency"]}

    await until(lambda: checks(gw, "rules", "unchanged") >= 3, what="unchanged rule checks")
    assert rules.calls == 0 and reloads(gw, "rules", "ok") == 0

    # a new file under the prefix: picked up from the LIST's ETags
    bucket.put("rules/quota.yml", yaml.safe_dump({"groups": [{"name": "quota", "rules": []}]}))
    await until(lambda: reloads(gw, "rules", "ok") == 1, what="rules reload")
    assert rules.loaded == {bucket.url("rules/latency.yml"): ["latency"], bucket.url("rules/quota.yml"): ["quota"]}

    # an edited file that is broken: refused, the engine keeps the rules it had
    bucket.put("rules/latency.yml", "groups: {not: a list}\n")
    await until(lambda: reloads(gw, "rules", "error") == 1, what="refused rules")
    assert set(rules.loaded) == {bucket.url("rules/latency.yml"), bucket.url("rules/quota.yml")}
    assert rules.loaded[bucket.url("rules/latency.yml")] == ["latency"]
    assert metric(gw, "gatewatch_config_last_reload_successful", source="rules") == 0
    calls = rules.calls
    before = checks(gw, "rules", "unchanged")
    await until(lambda: checks(gw, "rules", "unchanged") >= before + 3, what="checks after the refusal")
    assert rules.calls == calls  # not retried until the file changes again

    # fixed: loaded
    bucket.put("rules/latency.yml", yaml.safe_dump({"groups": [{"name": "latency-v2", "rules": []}]}))
    await until(lambda: reloads(gw, "rules", "ok") == 2, what="fixed rules")
    assert rules.loaded[bucket.url("rules/latency.yml")] == ["latency-v2"]
    assert metric(gw, "gatewatch_config_last_reload_successful", source="rules") == 1


async def test_litellm_config_change_by_etag_and_broken_change_refused(moto_endpoint, lab_environ, tmp_path,
                                                                       started_app):
    bucket = S3Bucket(moto_endpoint, "gw-catalog")
    bucket.put("litellm/config.yaml", LITELLM_CONFIG)
    bucket.put("gatewatch.yaml", gatewatch_yaml(tmp_path, bucket))
    gets = GetObjectLog()
    gw = await started_app(bucket.url("gatewatch.yaml"))
    original = yaml.safe_load(LITELLM_CONFIG)
    assert len(gw.catalog) == len(original["model_list"])
    assert gw.catalog.get("gpt-lab-acct222-euw1").aws_region == "eu-west-1"

    await until(lambda: checks(gw, "litellm_config", "unchanged") >= 3, what="unchanged catalog checks")
    assert gets.count("config.yaml", 304) >= 3
    assert reloads(gw, "litellm_config", "ok") == 0

    # move one deployment to another region, drop another: the catalog follows
    changed = yaml.safe_load(LITELLM_CONFIG)
    for entry in changed["model_list"]:
        if entry["model_info"]["id"] == "gpt-lab-acct222-euw1":
            entry["litellm_params"]["tags"] = ["aws_account:222222222222", "aws_region:eu-north-1"]
            entry["litellm_params"]["aws_region_name"] = "eu-north-1"
    changed["model_list"] = [e for e in changed["model_list"] if e["model_info"]["id"] != "bedrock-acct555-apse2"]
    bucket.put("litellm/config.yaml", yaml.safe_dump(changed))
    await until(lambda: reloads(gw, "litellm_config", "ok") == 1, what="catalog reload")
    assert len(gw.catalog) == len(changed["model_list"]) == len(original["model_list"]) - 1
    assert gw.catalog.get("gpt-lab-acct222-euw1").aws_region == "eu-north-1"
    assert gw.catalog.get("bedrock-acct555-apse2") is None
    assert metric(gw, "gatewatch_catalog_deployments") == len(changed["model_list"])

    # the enricher forgot its cache: a captured event of that deployment now gets the new region
    body = json.dumps(capture_items("generic_api_retry_then_success.json")).encode()
    events = [e for e in decode_body(body).events if e.deployment == "gpt-lab-acct222-euw1"]
    assert events
    for event in events:
        gw.enricher.enrich(event)
        assert (event.aws_account, event.aws_region) == ("222222222222", "eu-north-1")

    # broken: refused, the catalog stays as it was
    bucket.put("litellm/config.yaml", "model_list: {not: a list}\n")
    await until(lambda: reloads(gw, "litellm_config", "error") == 1, what="refused catalog")
    assert len(gw.catalog) == len(changed["model_list"])
    assert gw.catalog.get("gpt-lab-acct222-euw1").aws_region == "eu-north-1"
    assert metric(gw, "gatewatch_config_last_reload_successful", source="litellm_config") == 0
    assert metric(gw, "gatewatch_catalog_reloads_total", source="s3", outcome="error") == 1


async def test_unreachable_object_keeps_running_version_and_is_counted(moto_endpoint, lab_environ, tmp_path,
                                                                       started_app, caplog):
    bucket = S3Bucket(moto_endpoint, "gw-gone")
    bucket.put("litellm/config.yaml", LITELLM_CONFIG)
    bucket.put("gatewatch.yaml", gatewatch_yaml(tmp_path, bucket))
    gw = await started_app(bucket.url("gatewatch.yaml"))
    deployments = len(gw.catalog)
    caplog.set_level(logging.WARNING, logger="agent.refresh")
    bucket.client.delete_object(Bucket=bucket.name, Key="litellm/config.yaml")
    await until(lambda: checks(gw, "litellm_config", "error") >= 3, what="failed checks")
    assert len(gw.catalog) == deployments
    warnings = [r.getMessage() for r in caplog.records if "cannot check" in r.getMessage()]
    assert len(warnings) == 1 and "NoSuchKey" in warnings[0]  # logged once, counted every time


RULE = {"alert": "ManyErrors", "signal": "errors", "aggregate": "count", "over": "5m", "by": ["model_group"],
        "above": 10, "labels": {"severity": "warning"},
        "annotations": {"summary": "errors on {{ labels.model_group }}"}}


def rule_file(*rules: dict) -> str:
    return yaml.safe_dump({"groups": [{"name": "errors", "rules": list(rules)}]})


async def test_rules_in_s3_through_the_rule_engine(moto_endpoint, lab_environ, tmp_path, started_app):
    """With agent/rules' engine (its reload hook refuses a bad file by logging, not raising)."""
    bucket = S3Bucket(moto_endpoint, "gw-engine")
    bucket.put("litellm/config.yaml", LITELLM_CONFIG)
    bucket.put("rules/errors.yml", rule_file(RULE))
    bucket.put("gatewatch.yaml", gatewatch_yaml(tmp_path, bucket, rules=True))
    gw = await started_app(bucket.url("gatewatch.yaml"))
    engine = getattr(gw, "rule_engine", None)
    if engine is None:
        pytest.skip("the rule engine is not installed")
    assert [r.alert for r in engine.rule_set.rules()] == ["ManyErrors"]

    second = dict(RULE, alert="ManyErrorsFast", over="1m")
    bucket.put("rules/errors.yml", rule_file(RULE, second))
    await until(lambda: reloads(gw, "rules", "ok") == 1, what="rules reload")
    assert sorted(r.alert for r in engine.rule_set.rules()) == ["ManyErrors", "ManyErrorsFast"]

    bucket.put("rules/errors.yml", rule_file(dict(RULE, aggregate="p")))
    await until(lambda: reloads(gw, "rules", "error") == 1, what="refused rules")
    assert sorted(r.alert for r in engine.rule_set.rules()) == ["ManyErrors", "ManyErrorsFast"]
    assert metric(gw, "gatewatch_config_last_reload_successful", source="rules") == 0
