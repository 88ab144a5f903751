"""Deployment catalog and account/region attribution, from the real proxy config."""

from __future__ import annotations

import json

import boto3
import pytest
import yaml

from agent.enrich import (
    Catalog,
    Enricher,
    Fallback,
    catalog_from_config_text,
    catalog_from_model_info,
    parse_task_arn,
    region_from_api_base,
)
from agent.parse.litellm import decode_body
from tests.conftest import FIXTURES, capture_items, free_port

CONFIG_TEXT = (FIXTURES / "config.yaml").read_text()


def expected_attribution() -> dict[str, tuple[str, str]]:
    """What the proxy config says about each deployment, read independently of enrich.py."""
    out = {}
    for entry in yaml.safe_load(CONFIG_TEXT)["model_list"]:
        params, info = entry["litellm_params"], entry["model_info"]
        tags = dict(t.split(":", 1) for t in params.get("tags", []))
        account = tags.get("aws_account", "")
        role = params.get("aws_role_name", "")
        if role.startswith("arn:aws:iam::"):
            account = role.split(":")[4]
        region = params.get("aws_region_name") or tags.get("aws_region", "")
        out[info["id"]] = (account, region)
    return out


def test_catalog_attributes_every_deployment_the_config_names(lab_environ):
    catalog = catalog_from_config_text(CONFIG_TEXT)
    expected = expected_attribution()
    assert {d.id for d in catalog} == set(expected)
    for dep in catalog:
        assert (dep.aws_account, dep.aws_region) == expected[dep.id], dep.id
    assert catalog.get("bedrock-acct555-apse2").attribution.startswith("aws_role_name")
    assert catalog.get("gpt-lab-acct111-use1").rpm == 600
    assert catalog.get("gpt-lab-acct111-use1").api_base == lab_environ["UPSTREAM_A"]  # os.environ/ resolved
    assert catalog.get("bedrock-acct444-euc1").model == "anthropic.claude-3-haiku-20240307-v1:0"


def test_model_info_gives_the_same_catalog_without_secrets():
    body = json.loads((FIXTURES / "health_model_info_with_key.json").read_text())["body"]
    deployments = {d.id: d for d in catalog_from_model_info(body)}
    expected = expected_attribution()
    for dep_id, (account, region) in expected.items():
        if dep_id == "bedrock-acct555-apse2":
            # /model/info strips aws_role_name; the deployment tag still names the account
            assert deployments[dep_id].aws_account == "555555555555"
            continue
        assert (deployments[dep_id].aws_account, deployments[dep_id].aws_region) == (account, region)


def test_bedrock_region_from_host():
    assert region_from_api_base("https://bedrock-runtime.eu-west-3.amazonaws.com/model/x/converse") == "eu-west-3"
    assert region_from_api_base("https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com") == "us-gov-west-1"
    assert region_from_api_base("http://127.0.0.1:18001") == ""


def _events(name):
    return decode_body(json.dumps(capture_items(name)).encode()).events


def test_enricher_uses_catalog_then_tags_then_fallback(lab_environ):
    catalog = catalog_from_config_text(CONFIG_TEXT, Fallback("999999999999", "sa-east-1"))
    unattributed = []
    enricher = Enricher(catalog, lambda dep, group: unattributed.append(dep))
    expected = expected_attribution()
    for name in ("generic_api_success.json", "generic_api_bedrock_success.json",
                 "generic_api_bedrock_assume_role.json", "generic_api_retry_then_success.json"):
        for event in _events(name):
            enricher.enrich(event)
            assert (event.aws_account, event.aws_region) == expected[event.deployment]
    throttled = _events("generic_api_bedrock_throttled.json")[0]
    enricher.enrich(throttled)  # the config names a region but no account for this one
    assert (throttled.aws_account, throttled.aws_region) == ("999999999999", "us-east-1")
    assert unattributed == []


def test_retry_tags_last_one_wins_without_catalog():
    enricher = Enricher(Catalog())
    failure, success, *_ = _events("generic_api_retry_then_success.json")
    enricher.enrich(failure)
    enricher.enrich(success)
    assert (failure.aws_account, failure.aws_region) == ("111111111111", "us-east-1")
    assert (success.aws_account, success.aws_region) == ("222222222222", "eu-west-1")


def test_unattributed_deployments_are_counted_not_guessed():
    seen = []
    enricher = Enricher(Catalog(), lambda dep, group: seen.append((dep, group)))
    event = _events("generic_api_slow.json")[0]
    enricher.enrich(event)
    assert (event.aws_account, event.aws_region) == ("unknown", "unknown")
    assert seen == [("slow-model-d", "slow-model")]


def test_ecs_task_arn():
    fallback = parse_task_arn("arn:aws:ecs:eu-west-1:123456789012:task/prod/0123456789abcdef")
    assert fallback == Fallback("123456789012", "eu-west-1")


@pytest.fixture
def moto_s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        monkeypatch.setenv(key, value)
    yield f"http://127.0.0.1:{port}"
    server.stop()


async def test_catalog_from_s3_through_the_running_app(moto_s3, lab_environ, gatewatch_server):
    s3 = boto3.client("s3", endpoint_url=moto_s3)
    s3.create_bucket(Bucket="litellm-config")
    s3.put_object(Bucket="litellm-config", Key="prod/config.yaml", Body=CONFIG_TEXT.encode())
    gw, _url = await gatewatch_server({"litellm": {"config": "s3://litellm-config/prod/config.yaml"}})
    assert len(gw.catalog) == len(expected_attribution())
    assert gw.catalog.get("bedrock-acct555-apse2").aws_account == "555555555555"


async def test_missing_s3_object_fails_start_with_the_url(moto_s3):
    from agent.app import GatewatchApp
    from agent.config import parse_config
    from agent.configtypes import ConfigError

    boto3.client("s3", endpoint_url=moto_s3).create_bucket(Bucket="litellm-config")
    app = GatewatchApp(parse_config({"litellm": {"config": "s3://litellm-config/missing.yaml"}}))
    with pytest.raises(ConfigError) as info:
        await app.load_catalog()
    assert "s3://litellm-config/missing.yaml" in str(info.value)
    assert "NoSuchKey" in str(info.value)
