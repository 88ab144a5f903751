"""Model id -> quota rows, the `quotas:` config section, the usage views and the forecast."""

from __future__ import annotations

import pytest

from agent.config import parse_config
from agent.configtypes import ConfigError
from agent.events import Event, Kind
from agent.parse.litellm import decode_body
from agent.quotas.mapping import (
    CROSS_REGION,
    ON_DEMAND,
    ListedQuota,
    ModelTable,
    match_quotas,
    model_ref,
)
from agent.quotas.service import QuotaService
from agent.quotas.usage import QuotaTarget, UsageRecorder
from tests.conftest import load_capture


@pytest.mark.parametrize(("model", "invoked", "base", "inference"), [
    ("anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-haiku-20240307-v1:0",
     "anthropic.claude-3-haiku-20240307-v1:0", ON_DEMAND),
    ("bedrock/converse/us.anthropic.claude-3-7-sonnet-20250219-v1:0", "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
     "anthropic.claude-3-7-sonnet-20250219-v1:0", CROSS_REGION),
    ("eu.anthropic.claude-sonnet-4-20250514-v1:0", "eu.anthropic.claude-sonnet-4-20250514-v1:0",
     "anthropic.claude-sonnet-4-20250514-v1:0", CROSS_REGION),
    ("apac.amazon.nova-pro-v1:0", "apac.amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0", CROSS_REGION),
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
     "anthropic.claude-sonnet-4-5-20250929-v1:0", CROSS_REGION),
    ("invoke/amazon.nova-lite-v1:0", "amazon.nova-lite-v1:0", "amazon.nova-lite-v1:0", ON_DEMAND),
])
def test_inference_kind_comes_from_the_model_id(model, invoked, base, inference):
    ref = model_ref(model)
    assert ref is not None and (ref.invoked, ref.base, ref.inference) == (invoked, base, inference)


def test_arn_models_have_no_per_model_quota():
    assert model_ref("arn:aws:bedrock:us-east-1:111111111111:application-inference-profile/abc") is None


def test_shipped_table_longest_prefix_and_burndown():
    table = ModelTable.load()
    assert table.lookup("anthropic.claude-3-5-sonnet-20241022-v2:0").quota_names == ("Anthropic Claude 3.5 Sonnet V2",)
    sonnet4 = table.lookup("anthropic.claude-sonnet-4-20250514-v1:0")
    assert sonnet4.output_burndown == 5.0 and sonnet4.max_output_tokens == 64000
    assert table.lookup("anthropic.claude-3-haiku-20240307-v1:0").output_burndown == 1.0
    assert table.lookup("acme.unknown-v1") is None


def test_config_overrides_win_and_extend():
    cfg = parse_config({"quotas": {"models": {
        "acme.new": {"quota_name": "Acme New", "max_output_tokens": 1000},
        "anthropic.claude-3-haiku": {"quota_name": "Claude 3 Haiku (renamed)"}}}})
    table = ModelTable.load(cfg.quotas.models)
    assert table.lookup("acme.new-v1:0").quota_names == ("Acme New",)
    haiku = table.lookup("anthropic.claude-3-haiku-20240307-v1:0")
    assert haiku.quota_names == ("Claude 3 Haiku (renamed)",) and haiku.max_output_tokens == 4096  # kept


def test_names_match_without_case_and_by_inference():
    info = ModelTable.load().lookup("anthropic.claude-3-7-sonnet")
    listed = [ListedQuota("On-demand InvokeModel tokens per minute for Anthropic Claude 3.7 Sonnet V1", "L-OD", 1.0),
              ListedQuota("cross-region invokemodel tokens per minute for anthropic claude 3.7 sonnet v1", "L-CR", 2.0),
              ListedQuota("Model invocation max tokens per day for Anthropic Claude 3.7 Sonnet V1", "L-D", 3.0)]
    cross = match_quotas(model_ref("us.anthropic.claude-3-7-sonnet-20250219-v1:0"), info, listed)
    assert {q: m.code for q, m in cross.items()} == {"tokens_per_minute": "L-CR", "tokens_per_day": "L-D"}
    on_demand = match_quotas(model_ref("anthropic.claude-3-7-sonnet-20250219-v1:0"), info, listed)
    assert on_demand["tokens_per_minute"].code == "L-OD"


@pytest.mark.parametrize(("data", "message"), [
    ({"refresh_interval": "10s"}, "gw.yaml: quotas.refresh_interval: expected at least 1m"),
    ({"roles": {"1234": "arn:aws:iam::123456789012:role/x"}}, "gw.yaml: quotas.roles.1234: expected a 12-digit"),
    ({"roles": {"123456789012": "not-an-arn"}}, "gw.yaml: quotas.roles.123456789012: expected an IAM role ARN"),
    ({"roles": {"123456789012": "arn:aws:iam::999999999999:role/x"}}, "the role ARN is in another account"),
    ({"models": {"acme.x": {"max_output_tokens": 5}}}, "gw.yaml: quotas.models.acme.x.quota_name"),
    ({"models": {"acme.x": {"quota_name": "X", "output_burndown": 0.5}}},
     "gw.yaml: quotas.models.acme.x.output_burndown: expected a number >= 1"),
    ({"enable": True}, "gw.yaml: quotas.enable: unknown key"),
])
def test_bad_quotas_section_fails_with_file_key_and_expectation(data, message):
    with pytest.raises(ConfigError) as info:
        parse_config({"quotas": data}, "gw.yaml")
    assert message in str(info.value)


def test_defaults():
    cfg = parse_config({}).quotas
    assert (cfg.enabled, cfg.refresh_interval, cfg.account_usage_interval) == (False, 3600.0, 60.0)


def test_max_tokens_is_read_from_the_real_payloads_model_parameters():
    health = decode_body(_body("generic_api_health.json")).events
    assert {e.max_tokens for e in health} == {16}  # LiteLLM's own health checks send max_tokens: 16
    bedrock = decode_body(_body("generic_api_bedrock_success.json")).events
    assert bedrock and {e.max_tokens for e in bedrock} == {None}  # the lab's clients set none
    odd = decode_body(b'[{"status": "success", "startTime": 1764057600, "endTime": 1764057601, '
                      b'"model_parameters": {"max_tokens": "lots"}}]')
    assert len(odd.events) == 1 and odd.events[0].max_tokens is None  # an odd value never rejects the payload


def _body(name: str) -> bytes:
    import json

    capture = load_capture(name)
    return capture["body_text"].encode() if capture.get("body_text") else json.dumps(capture["body_json"]).encode()


def _event(t: float, **kw) -> Event:
    base = {"kind": Kind.REQUEST, "time": t, "start_time": t - 1, "deployment": "d1", "input_tokens": 100,
            "output_tokens": 50}
    base.update(kw)
    return Event(**base)


async def test_usage_views_burndown_and_reservations():
    sonnet4 = ModelTable.load().lookup("anthropic.claude-sonnet-4-20250514-v1:0")
    rec = UsageRecorder()
    rec.targets = {"d1": QuotaTarget("1|r|m|on_demand", sonnet4)}
    t = 1_800_000_000.0  # on a minute boundary + 0
    rec.handle([_event(t + 10, max_tokens=200),  # completed 100 + 50x5, reserved 100 + 200x5
                _event(t + 20),  # no max_tokens: reserves 64000 x 5
                _event(t + 30, status="failure", rate_limited=True, output_tokens=0),  # throttled: nothing
                _event(t + 40, deployment="other")])
    minute = await rec.per_minute(t + 59)
    assert minute["1|r|m|on_demand|completed"][0] == pytest.approx(2 * 350 * 1.0)
    assert minute["1|r|m|on_demand|reserved"][0] == pytest.approx(100 + 1000 + 100 + 320000)
    assert minute["1|r|m|on_demand|reserved"][1] == 2
    assert rec.without_max_tokens == {"1|r|m|on_demand": 1}
    # a minute later only the unexpired share of the previous minute counts
    later = await rec.per_minute(t + 90)
    assert later["1|r|m|on_demand|completed"][0] == pytest.approx(700 * 0.5)
    assert (await rec.per_day(t + 3000))["1|r|m|on_demand|completed"] == pytest.approx(700)


def test_forecast_from_the_slope():
    service = QuotaService.__new__(QuotaService)
    service.history = {}
    key = ("k", "tokens_per_minute")
    assert service._forecast(key, 0.0, 0.5) is None
    assert service._forecast(key, 30.0, 0.55) is None
    minutes = service._forecast(key, 60.0, 0.6)  # +0.1 per minute: 4 minutes to 100 %
    assert minutes == pytest.approx(4.0)
    assert service._forecast(("flat", "q"), 0.0, 0.5) is None
    assert service._forecast(key, 90.0, 1.2) == 0.0


def test_cloudwatch_gauge_rows_as_emf_lines_and_put_metric_data():
    from agent.sinks.cloudwatch import gauge_batches
    from tests.cloudwatch_support import check_emf_line

    dims = {"AwsAccount": "444444444444", "AwsRegion": "eu-central-1", "Model": "anthropic.claude-3-haiku",
            "Quota": "tokens_per_minute", "Inference": "on_demand"}
    rows = [(dims, {"QuotaLimit": 10000.0, "QuotaUtilization": 0.42, "QuotaUtilizationReserved": 0.42})]
    [emf] = gauge_batches(rows, 1_800_000_000.0, "LiteLLM", "emf")
    [line] = emf.payload
    doc = check_emf_line(line)
    assert doc["QuotaUtilization"] == 0.42 and doc["AwsAccount"] == "444444444444"
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [list(dims)]
    [api] = gauge_batches(rows, 1_800_000_000.0, "LiteLLM", "api")
    assert {d["MetricName"]: d["Value"] for d in api.payload} == rows[0][1]
    assert api.datapoints == 3
