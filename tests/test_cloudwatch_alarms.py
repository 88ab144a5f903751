"""Rules -> CloudWatch alarms and the CloudWatch dashboard: mapping, validity (botocore's
PutMetricAlarm shape + moto, cfn-lint for CloudFormation, put-dashboard), the CLI, and the
files shipped in dashboards/cloudwatch/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from agent.cli import main
from agent.enrich import catalog_from_config_text
from agent.rules.exports.cloudwatch import alarms_for_rules, alarms_to_cloudformation, plan_alarms
from agent.sinks.cloudwatch_cli import load_rule_groups
from agent.sinks.cloudwatch_dashboard import dashboard_body
from agent.sinks.config import DEFAULT_DIMENSION_SETS
from tests.conftest import FIXTURES, ROOT, free_port

RULES = yaml.safe_load("""
groups:
  - name: latency
    interval: 15s
    rules:
      - alert: SlowDeployment
        signal: latency_seconds
        aggregate: p95
        over: 5m
        by: [model_group, deployment, aws_account, aws_region]
        where: {status: success}
        min_events: 20
        above: 20
        for: 2m
        keep_firing_for: 5m
        labels: {severity: warning}
        annotations:
          summary: "p95 {{ value }}s on {{ labels.deployment }} in {{ labels.aws_region }}"
      - alert: SlowAverage
        signal: ttft_seconds
        aggregate: avg
        over: 10m
        by: [model_group]
        above: 2.5
  - name: errors
    rules:
      - alert: ErrorBurst
        signal: errors
        aggregate: rate
        over: 5m
        by: [model_group, deployment]
        above: 0.5
      - alert: ThrottledAccount
        signal: rate_limited
        aggregate: sum
        over: 10m
        by: [aws_account, aws_region]
        above: 5
      - alert: HighErrorRatio
        signal: error_ratio
        aggregate: ratio
        over: 5m
        by: [model_group]
        above: 0.2
      - alert: FleetErrorRatio
        signal: error_ratio
        aggregate: ratio
        over: 5m
        above: 0.1
      - alert: GptLabSilent
        signal: requests
        aggregate: count
        over: 10m
        where: {model_group: gpt-lab}
        below: 1
      - alert: TeamSpend
        signal: cost_usd
        aggregate: sum
        over: 1h
        by: [team]
        above: 5
      - alert: DeploymentDown
        signal: deployment_state
        aggregate: last
        over: 1m
        by: [deployment]
        above: 1
      - alert: FleetP99
        signal: latency_seconds
        aggregate: p99
        over: 5m
        above: 30
""")


@pytest.fixture
def catalog(lab_environ) -> list[Any]:
    return list(catalog_from_config_text((FIXTURES / "config.yaml").read_text(), source="config.yaml"))


def by_name(alarms: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["AlarmName"]: a for a in alarms}


def test_counters_become_one_metrics_insights_alarm_grouped_by_the_rule_labels():
    plan = plan_alarms(RULES)
    alarms = by_name(plan.alarms)
    burst = alarms["gatewatch-ErrorBurst"]
    assert burst["Metrics"] == [{
        "Id": "q1", "ReturnData": True, "Period": 300, "Label": "ErrorBurst",
        "Expression": 'SELECT SUM(Errors) FROM SCHEMA("LiteLLM", ModelGroup, Deployment) '
                      "GROUP BY ModelGroup, Deployment ORDER BY SUM() DESC"}]
    assert burst["Threshold"] == 0.5 * 300  # a rate per second over 5 minutes of sums
    assert burst["ComparisonOperator"] == "GreaterThanThreshold" and burst["EvaluationPeriods"] == 1
    throttled = alarms["gatewatch-ThrottledAccount"]
    assert throttled["Metrics"][0]["Expression"] == (
        'SELECT SUM(RateLimited) FROM SCHEMA("LiteLLM", ModelGroup, AwsAccount, AwsRegion) '
        "GROUP BY AwsAccount, AwsRegion ORDER BY SUM() DESC")
    assert throttled["Metrics"][0]["Period"] == 600 and throttled["Threshold"] == 5
    silent = alarms["gatewatch-GptLabSilent"]
    assert silent["Metrics"][0]["Expression"] == (
        "SELECT SUM(Requests) FROM SCHEMA(\"LiteLLM\", ModelGroup) WHERE ModelGroup = 'gpt-lab'")
    assert silent["ComparisonOperator"] == "LessThanThreshold" and silent["TreatMissingData"] == "breaching"
    average = alarms["gatewatch-SlowAverage"]
    assert "SELECT AVG(TTFT)" in average["Metrics"][0]["Expression"] and average["Threshold"] == 2500.0  # ms


def test_unmappable_rules_are_reported_with_the_reason():
    skipped = {s.alert: s.reason for s in plan_alarms(RULES).skipped}
    assert "not a CloudWatch dimension" in skipped["TeamSpend"]
    assert "no CloudWatch metric" in skipped["DeploymentDown"]
    assert "catalog" in skipped["SlowDeployment"]  # percentiles need concrete dimension values
    assert "catalog" in skipped["HighErrorRatio"]
    assert "empty dimension set" in skipped["FleetP99"]


def test_percentiles_and_ratios_expand_per_deployment_from_the_catalog(catalog):
    plan = plan_alarms(RULES, deployments=catalog)
    alarms = by_name(plan.alarms)
    slow = {n: a for n, a in alarms.items() if n.startswith("gatewatch-SlowDeployment-")}
    assert len(slow) == len(catalog)  # one per deployment
    one = slow["gatewatch-SlowDeployment-gpt-lab/gpt-lab-acct111-use1"]
    assert one["ExtendedStatistic"] == "p95" and one["MetricName"] == "Latency"
    assert one["Dimensions"] == [{"Name": "ModelGroup", "Value": "gpt-lab"},
                                 {"Name": "Deployment", "Value": "gpt-lab-acct111-use1"}]
    assert one["Threshold"] == 20000.0 and one["Period"] == 300
    assert one["EvaluationPeriods"] == 2 and one["DatapointsToAlarm"] == 2  # for: 2m -> one more period
    assert "keep_firing_for" in one["AlarmDescription"] and "min_events" in one["AlarmDescription"]
    ratio = alarms["gatewatch-HighErrorRatio-gpt-lab"]
    numerator, denominator, expression = ratio["Metrics"]
    assert numerator["MetricStat"]["Metric"]["MetricName"] == "Errors"
    assert denominator["MetricStat"]["Metric"]["MetricName"] == "Requests"
    assert numerator["MetricStat"]["Metric"]["Dimensions"] == [{"Name": "ModelGroup", "Value": "gpt-lab"}]
    assert expression == {"Id": "e1", "Expression": "m1 / m2", "ReturnData": True, "Label": "HighErrorRatio"}
    groups = {d.model_group for d in catalog}
    assert {n for n in alarms if n.startswith("gatewatch-HighErrorRatio-")} == {
        f"gatewatch-HighErrorRatio-{g}" for g in groups}
    fleet = alarms["gatewatch-FleetErrorRatio"]
    assert [m.get("Expression") for m in fleet["Metrics"]] == [
        'SELECT SUM(Errors) FROM SCHEMA("LiteLLM", ModelGroup)',
        'SELECT SUM(Requests) FROM SCHEMA("LiteLLM", ModelGroup)', "m1 / m2"]


def test_fleet_percentile_with_an_empty_dimension_set():
    sets = [*DEFAULT_DIMENSION_SETS, []]
    alarms = by_name(alarms_for_rules(RULES, dimension_sets=sets))
    fleet = alarms["gatewatch-FleetP99"]
    assert fleet["Dimensions"] == [] and fleet["ExtendedStatistic"] == "p99" and fleet["Threshold"] == 30000.0


def test_the_rule_models_objects_and_raw_dicts_give_the_same_alarms(catalog):
    from agent.rules.exports.prometheus import raw_groups
    from agent.rules.schema import build_rule_set

    rule_set = build_rule_set([("pack.yaml", yaml.safe_dump(RULES))])
    assert len(rule_set) == sum(len(g["rules"]) for g in RULES["groups"])  # the rule engine accepts them all
    from_objects = plan_alarms(rule_set.groups, deployments=catalog)
    from_dicts = plan_alarms(raw_groups(rule_set), deployments=catalog)
    assert from_objects.alarms == from_dicts.alarms == plan_alarms(RULES, deployments=catalog).alarms
    assert [s.reason for s in from_objects.skipped] == [s.reason for s in from_dicts.skipped]


def test_the_default_rule_pack(catalog):
    groups = load_rule_groups(None)
    generic = plan_alarms(groups)
    with_catalog = plan_alarms(groups, deployments=catalog)
    skipped = {s.alert: s.reason for s in with_catalog.skipped}
    assert "budget" in skipped["TeamDailySpend"] and "consecutive" in skipped["DeploymentConsecutiveFailures"]
    names = {a["AlarmName"] for a in with_catalog.alarms}
    for dep in catalog:  # every deployment of the LiteLLM config gets its latency and error-ratio alarms
        assert f"gatewatch-DeploymentSlowP95-{dep.model_group}/{dep.id}" in names
        assert f"gatewatch-DeploymentErrorRatioHigh-{dep.model_group}/{dep.id}" in names
    assert {a["AlarmName"] for a in generic.alarms} <= names
    bedrock = by_name(with_catalog.alarms)["gatewatch-BedrockThrottling"]
    bedrock_ids = sorted(d.id for d in catalog if d.provider == "bedrock")
    assert bedrock["Metrics"][0]["Expression"] == (
        'SELECT SUM(RateLimited) FROM SCHEMA("LiteLLM", ModelGroup, Deployment) WHERE Deployment IN ('
        + ", ".join(f"'{i}'" for i in bedrock_ids) + ") GROUP BY ModelGroup, Deployment ORDER BY SUM() DESC")
    slow = by_name(with_catalog.alarms)["gatewatch-DeploymentSlowP95-gpt-lab/gpt-lab-acct111-use1"]
    # the summary template, with what is known about the deployment filled in
    assert slow["AlarmDescription"].startswith(
        "p95 latency <value>s on gpt-lab-acct111-use1 (gpt-lab) in 111111111111/us-east-1")


def test_where_matchers_map_onto_insights_conditions():
    rules = {"groups": [{"name": "g", "rules": [
        {"alert": "NotVirginia", "signal": "errors", "aggregate": "count", "over": "5m",
         "by": ["aws_account", "aws_region"], "where": {"aws_region": "!us-east-1"}, "above": 3},
        {"alert": "TwoGroups", "signal": "requests", "aggregate": "count", "over": "5m",
         "where": {"model_group": ["gpt-lab", "bedrock-lab"]}, "below": 1},
        {"alert": "Regex", "signal": "errors", "aggregate": "count", "where": {"model_group": "~gpt-.*"},
         "above": 1},
        {"alert": "ByTeam", "signal": "errors", "aggregate": "count", "where": {"team": "platform"}, "above": 1},
        {"alert": "Provider", "signal": "errors", "aggregate": "count", "by": ["deployment"],
         "where": {"api_provider": "bedrock"}, "above": 1},
    ]}]}
    plan = plan_alarms(rules)
    alarms = by_name(plan.alarms)
    assert alarms["gatewatch-NotVirginia"]["Metrics"][0]["Expression"] == (
        'SELECT SUM(Errors) FROM SCHEMA("LiteLLM", ModelGroup, AwsAccount, AwsRegion) '
        "WHERE AwsRegion != 'us-east-1' GROUP BY AwsAccount, AwsRegion ORDER BY SUM() DESC")
    assert alarms["gatewatch-TwoGroups"]["Metrics"][0]["Expression"] == (
        "SELECT SUM(Requests) FROM SCHEMA(\"LiteLLM\", ModelGroup) WHERE ModelGroup IN ('bedrock-lab', 'gpt-lab')")
    skipped = {s.alert: s.reason for s in plan.skipped}
    assert "regular expressions" in skipped["Regex"]
    assert "team" in skipped["ByTeam"]
    assert "catalog" in skipped["Provider"]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def cloudwatch_client(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAGATEWATCHTEST000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "gatewatch-test-secret")
    return boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=moto_url)


@pytest.mark.integration
def test_every_alarm_is_a_valid_put_metric_alarm_call(moto_url, catalog, monkeypatch):
    cw = cloudwatch_client(moto_url, monkeypatch)
    alarms = alarms_for_rules(RULES, deployments=catalog, actions=["arn:aws:sns:us-east-1:123456789012:page"])
    for alarm in alarms:  # botocore validates the request shape; moto stores it
        cw.put_metric_alarm(**alarm)
    stored = {a["AlarmName"]: a for page in cw.get_paginator("describe_alarms").paginate()
              for a in page["MetricAlarms"]}
    assert set(stored) >= {a["AlarmName"] for a in alarms}
    stored_p95 = stored["gatewatch-SlowDeployment-gpt-lab/gpt-lab-acct111-use1"]
    assert stored_p95["ExtendedStatistic"] == "p95" and stored_p95["Threshold"] == 20000.0


@pytest.mark.integration
def test_dashboard_is_accepted_by_put_dashboard(moto_url, monkeypatch):
    cw = cloudwatch_client(moto_url, monkeypatch)
    body = dashboard_body("LiteLLM", "eu-west-1")
    cw.put_dashboard(DashboardName="gatewatch", DashboardBody=json.dumps(body))
    assert json.loads(cw.get_dashboard(DashboardName="gatewatch")["DashboardBody"]) == body


@pytest.mark.slow
def test_cloudformation_template_passes_cfn_lint(catalog):
    import cfnlint.api

    alarms = alarms_for_rules(RULES, deployments=catalog)
    template = alarms_to_cloudformation(alarms)
    assert len(template["Resources"]) == len(alarms)
    assert cfnlint.api.lint(json.dumps(template), regions=["us-east-1"]) == []
    broken = json.loads(json.dumps(template))
    next(iter(broken["Resources"].values()))["Properties"]["Period"] = 45
    assert cfnlint.api.lint(json.dumps(broken), regions=["us-east-1"])  # the linter does catch mistakes


def test_dashboard_widgets_follow_the_published_dimension_sets():
    body = dashboard_body("LiteLLM", "us-west-2")
    metric_widgets = [w for w in body["widgets"] if w["type"] == "metric"]
    published = ['{"LiteLLM",' + ",".join(s) + "}" for s in DEFAULT_DIMENSION_SETS]
    for widget in metric_widgets:
        props = widget["properties"]
        assert props["region"] == "us-west-2"
        for (line,) in props["metrics"]:
            assert line["expression"].startswith("SEARCH('{")
            assert any(schema in line["expression"] for schema in published), line["expression"]
        assert 0 <= widget["x"] <= 12 and widget["width"] == 12
    titles = {w["properties"]["title"] for w in metric_widgets}
    assert {"Requests by model group", "Latency p95 (ms) by model group", "Cost (USD) by account and region",
            "Cooldowns by deployment", "Requests by provider"} <= titles
    only_provider = dashboard_body("LiteLLM", "us-west-2", [["Provider"]])
    assert [w["properties"]["title"] for w in only_provider["widgets"] if w["type"] == "metric"] == [
        "Requests by provider"]


def write_config(tmp_path: Path, extra: dict[str, Any] | None = None) -> Path:
    path = tmp_path / "gatewatch.yaml"
    path.write_text(yaml.safe_dump({"litellm": {"config": str(FIXTURES / "config.yaml")},
                                    "cloudwatch": {"namespace": "Gateway", "region": "eu-central-1",
                                                   **(extra or {})}}))
    return path


def test_cli_dashboard_uses_the_config(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["cloudwatch", "dashboard", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out) == dashboard_body("Gateway", "eu-central-1")


def test_cli_alarms_json_and_cloudformation(tmp_path, capsys, lab_environ):
    config = write_config(tmp_path)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "pack.yaml").write_text(yaml.safe_dump(RULES))
    assert main(["cloudwatch", "alarms", "--config", str(config), "--rules", str(rules)]) == 0
    out = capsys.readouterr()
    alarms = json.loads(out.out)
    assert "gatewatch-SlowDeployment-gpt-lab/gpt-lab-acct111-use1" in {a["AlarmName"] for a in alarms}
    assert all("Gateway" in json.dumps(a) for a in alarms)
    assert "skipped errors/TeamSpend" in out.err
    assert main(["cloudwatch", "alarms", "--config", str(config), "--rules", str(rules), "--no-catalog",
                 "--format", "cloudformation"]) == 0
    template = json.loads(capsys.readouterr().out)
    assert all(r["Type"] == "AWS::CloudWatch::Alarm" for r in template["Resources"].values())
    assert main(["cloudwatch", "alarms", "--rules", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_shipped_files_match_the_generator(tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("GATEWATCH_CONFIG", raising=False)
    assert main(["cloudwatch", "export", str(tmp_path)]) == 0
    shipped = ROOT / "dashboards" / "cloudwatch"
    for name in ("dashboard.json", "alarms.json", "alarms.cfn.json"):
        assert (shipped / name).read_text() == (tmp_path / name).read_text(), (
            f"dashboards/cloudwatch/{name} is stale: run `gatewatch cloudwatch export dashboards/cloudwatch`")
    assert len(json.loads((shipped / "alarms.json").read_text())) == len(alarms_for_rules(load_rule_groups(None)))
