"""The default rule pack through the CLI: its unit tests, coverage of every rule, Prometheus export."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from agent.rules.loader import load_rule_set
from agent.rules.testing import run_files
from tests.conftest import FIXTURES, ROOT, lab_env

RULES_DIR = ROOT / "rules"
TEST_FILES = sorted((RULES_DIR / "tests").glob("*_test.yml"))


def gatewatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_default_pack_unit_tests_pass_through_the_cli():
    assert len(TEST_FILES) >= 4
    result = gatewatch("rules", "test", *map(str, TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES)


def test_every_default_rule_is_tested_firing_and_quiet():
    rules = {r.alert for r in load_rule_set(None).rules()}
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case["alert_rule_test"]:
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert rules - firing == set(), "rules without a test that makes them fire"
    assert rules - quiet == set(), "rules without a test that shows them not firing"


def test_a_wrong_expectation_fails(tmp_path):
    path = tmp_path / "wrong_test.yml"
    path.write_text(textwrap.dedent(f"""\
        rule_files: [{RULES_DIR / "deployments.yml"}]
        tests:
          - name: wrong deployment label
            input_events:
              - event: {{kind: cooldown, model_group: g, deployment: real, aws_account: "1", aws_region: r}}
            alert_rule_test:
              - eval_time: 1m
                alertname: DeploymentCooledDown
                exp_alerts:
                  - exp_labels: {{severity: warning, family: deployments, model_group: g, deployment: other,
                                 aws_account: "1", aws_region: r}}
        """))
    result = gatewatch("rules", "test", str(path))
    assert result.returncode == 1
    assert "FAILED" in result.stdout and "'deployment': 'real'" in result.stdout
    bad = tmp_path / "bad_test.yml"
    bad.write_text("rule_files: [nope.yml]\ntests: []\n")
    result = gatewatch("rules", "test", str(bad))
    assert result.returncode == 1 and "nope.yml: file not found" in result.stdout


def test_fixture_inputs_drive_the_default_rules(tmp_path, monkeypatch, capsys):
    """The outage capture, through the real parser, enricher and engine, fires the failure rules."""
    for key, value in lab_env().items():
        monkeypatch.setenv(key, value)
    shutil.copy(FIXTURES / "config.yaml", tmp_path / "litellm.yaml")
    path = tmp_path / "outage_test.yml"
    path.write_text(textwrap.dedent(f"""\
        rule_files: [{RULES_DIR / "deployments.yml"}]
        catalog: litellm.yaml
        tests:
          - name: the captured outage (6 x 500, 6 x 503), twice
            input_events:
              - fixture: {FIXTURES / "generic_api_outage.json"}
                count: 2
                every: 10s
              - fixture: {FIXTURES / "generic_api_outage_2.json"}
                count: 2
                every: 10s
            alert_rule_test:
              - eval_time: 30s
                alertname: DeploymentConsecutiveFailures
                exp_alerts:
                  - exp_labels: {{severity: critical, family: deployments, model_group: error-model-nofallback,
                                 deployment: error-model-nofallback-d, aws_account: unknown, aws_region: unknown}}
                    exp_annotations:
                      summary: >-
                        12 failures in a row on error-model-nofallback-d (error-model-nofallback) in unknown/unknown
                  - exp_labels: {{severity: critical, family: deployments, model_group: bedrock-lab,
                                 deployment: bedrock-acct444-euc1, aws_account: "444444444444",
                                 aws_region: eu-central-1}}
              - eval_time: 30s
                alertname: DeploymentErrorRatioHigh
                exp_alerts: []
                exp_pending:
                  - exp_labels: {{severity: warning, family: deployments, model_group: error-model-nofallback,
                                 deployment: error-model-nofallback-d, aws_account: unknown, aws_region: unknown,
                                 api_provider: openai}}
                  - exp_labels: {{severity: warning, family: deployments, model_group: bedrock-lab,
                                 deployment: bedrock-acct444-euc1, aws_account: "444444444444",
                                 aws_region: eu-central-1, api_provider: bedrock}}
              - eval_time: 3m
                alertname: DeploymentErrorRatioHigh
                exp_alerts:
                  - exp_labels: {{severity: warning, family: deployments, model_group: error-model-nofallback,
                                 deployment: error-model-nofallback-d, aws_account: unknown, aws_region: unknown,
                                 api_provider: openai}}
                    exp_annotations:
                      summary: >-
                        100% of calls to error-model-nofallback-d (error-model-nofallback) in unknown/unknown fail
                  - exp_labels: {{severity: warning, family: deployments, model_group: bedrock-lab,
                                 deployment: bedrock-acct444-euc1, aws_account: "444444444444",
                                 aws_region: eu-central-1, api_provider: bedrock}}
        """))
    assert run_files([path]), capsys.readouterr().out


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (scripts/install-test-deps.sh installs Debian's prometheus package)")
    return found


def test_export_passes_promtool(tmp_path):
    promtool = _promtool()
    out = tmp_path / "gatewatch.rules.yml"
    result = gatewatch("rules", "export", "--format", "prometheus", "-o", str(out))
    assert result.returncode == 0, result.stderr
    checked = subprocess.run([promtool, "check", "rules", str(out)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    exported = yaml.safe_load(out.read_text())
    names = {r["alert"] for g in exported["groups"] for r in g["rules"]}
    skipped = {line.split()[1].rstrip(":").split("/")[1] for line in result.stderr.splitlines()
               if line.startswith("skipped ")}
    # everything is either exported or skipped with a reason
    assert names | skipped == {r.alert for r in load_rule_set(None).rules()}
    # ProxyDown: its value (seconds since the proxy was last up) and the start grace are the
    # sidecar's own; in PromQL it is `gatewatch_proxy_up == 0`, which has neither. LiteLLM's own
    # alerts (rules/litellm.yml) reach the sidecar only, as webhooks: no metric carries them. The Bedrock
    # quota rules read the quota service's own events; dashboards/prometheus/ has their PromQL form
    assert skipped == {"DeploymentConsecutiveFailures", "DeploymentUnhealthy", "RemainingRequestsLow",
                       "RemainingTokensLow", "ProxyDown", "LiteLLMBudgetAlert", "LiteLLMAlert",
                       "BedrockQuotaHeadroomLow", "BedrockQuotaExhaustionForecast", "BedrockQuotaUnmatched"}
    assert f"SUCCESS: {sum(len(g['rules']) for g in exported['groups'])} rules found" in checked.stdout


def test_exported_rules_fire_in_promtool(tmp_path):
    """The exported PromQL means what the gatewatch rule means: promtool's own unit test fires it."""
    promtool = _promtool()
    out = tmp_path / "deployments.rules.yml"
    assert gatewatch("rules", "export", str(RULES_DIR / "deployments.yml"), "-o", str(out)).returncode == 0
    runbook = yaml.safe_load(out.read_text())["groups"][0]["rules"][0]["annotations"]["runbook"]
    runbook = runbook.replace("{{ $labels.deployment }}", "d1")
    failure = 'exception_status="500",exception_class="Openai.InternalServerError"'
    labels = ('litellm_model_name="fake-500",model_id="d1",api_base="http://x",api_provider="openai",'
              'model_group="g",requested_model="g",api_key_alias="None",team="None",team_alias="None",'
              'aws_account="111111111111",aws_region="us-east-1"')
    (tmp_path / "t.yml").write_text(textwrap.dedent(f"""\
        rule_files: [deployments.rules.yml]
        evaluation_interval: 15s
        tests:
          - interval: 15s
            input_series:
              - series: 'litellm_deployment_total_requests_total{{{labels}}}'
                values: '0+4x40'
              - series: 'litellm_deployment_failure_responses_total{{{labels},{failure}}}'
                values: '0+2x40'
            alert_rule_test:
              - eval_time: 1m
                alertname: DeploymentErrorRatioHigh
                exp_alerts: []
              - eval_time: 5m
                alertname: DeploymentErrorRatioHigh
                exp_alerts:
                  - exp_labels: {{severity: warning, family: deployments, model_group: g, model_id: d1,
                                 deployment: d1, aws_account: "111111111111", aws_region: us-east-1,
                                 api_provider: openai}}
                    exp_annotations:
                      summary: "50% of calls to d1 (g) in 111111111111/us-east-1 fail"
                      description: "(count) calls in the last 5m; threshold 0.25."
                      runbook: {runbook!r}
        """))
    result = subprocess.run([promtool, "test", "rules", "t.yml"], capture_output=True, text=True, cwd=tmp_path,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_export_cloudwatch():
    result = gatewatch("rules", "export", "--format", "cloudwatch", str(RULES_DIR / "deployments.yml"))
    assert result.returncode == 0, result.stderr
    alarms = yaml.safe_load(result.stdout)
    # the CloudWatch module decides what maps; the CLI hands it every rule and reports the rest
    names = {a["AlarmName"].removeprefix("gatewatch-").split("-")[0] for a in alarms}
    skipped = {line.split()[1].rstrip(":") for line in result.stderr.splitlines() if line.startswith("skipped ")}
    assert names | {s.split("/")[1] for s in skipped} == {r.alert for r in load_rule_set(
        [str(RULES_DIR / "deployments.yml")]).rules()}


@pytest.mark.parametrize("path", [Path("rules/budget.yml"), Path("rules/latency.yml")])
def test_check_accepts_values_files(tmp_path, path):
    values = tmp_path / "values.yml"
    values.write_text("rules:\n  RegionSlowP95: {above: 60}\n  TeamDailySpend: {disabled: true}\n")
    result = gatewatch("rules", "check", "rules", "--values", str(values))
    assert result.returncode == 0, result.stderr
    assert "28 rules in 6 groups" in result.stdout
    result = gatewatch("rules", "check", str(path), "--values", str(values))
    assert result.returncode == 1 and "values for unknown rule" in result.stderr
