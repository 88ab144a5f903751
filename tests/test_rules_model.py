"""Rule files: schema, `file:line` errors, values files, matchers, templates, `gatewatch rules check`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.cli import main
from agent.events import Event, Kind
from agent.rules.loader import default_rules_dir, expand, load_rule_set
from agent.rules.model import RuleSetError, parse_rule_matcher
from agent.rules.schema import build_rule_set
from agent.rules.template import Template, humanize, humanize_duration, humanize_percentage
from agent.rules.values import parse_values

ISSUE_EXAMPLE = """\
groups:
  - name: latency
    interval: 15s                 # evaluation interval, default 15s
    rules:
      - alert: SlowDeployment
        signal: latency_seconds
        aggregate: p95
        over: 5m
        by: [model_group, deployment, aws_account, aws_region]
        where: {status: success, model_group: "~gpt-.*", team: "!internal"}
        min_events: 20
        above: 20                 # or below:
        for: 2m
        keep_firing_for: 5m
        labels: {severity: warning}
        annotations:
          summary: "p95 {{ value }}s on {{ labels.deployment }} in {{ labels.aws_region }}"
      - alert: TeamMonthlyBudget
        budget:
          signal: cost_usd
          by: [team_alias]
          period: month           # day | week | month
          timezone: UTC
          limit: 100              # default limit, in the signal's unit
          limits: {research: 2000}
          thresholds: [0.5, 0.8, 1.0]
          forecast: true          # also fire when the burn rate projects a breach before period end
        labels: {severity: critical}
"""


def build(text: str, file: str = "rules.yml", values: str | None = None, env: dict[str, str] | None = None):
    vals = parse_values(values, "values.yml", env or {}) if values is not None else None
    return build_rule_set([(file, textwrap.dedent(text))], vals, env or {})


def errors_of(text: str, values: str | None = None, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(RuleSetError) as info:
        build(text, values=values, env=env)
    return [str(e) for e in info.value.errors]


def test_the_issue_example_loads_as_written():
    rule_set = build(ISSUE_EXAMPLE)
    slow, budget = list(rule_set.rules())
    assert (slow.signal, slow.aggregate, slow.quantile, slow.over) == ("latency_seconds", "p95", 0.95, 300.0)
    assert slow.by == ("model_group", "deployment", "aws_account", "aws_region")
    assert [m.describe() for m in slow.where] == ["status='success'", "model_group=~'gpt-.*'", "team!='internal'"]
    assert (slow.min_events, slow.above, slow.below, slow.for_, slow.keep_firing_for) == (20, 20.0, None, 120.0, 300.0)
    assert slow.labels == {"severity": "warning"} and slow.scope == "local"
    assert rule_set.groups[0].interval == 15.0
    assert budget.budget is not None and budget.scope == "global"
    assert budget.budget.limit_for(("research",)) == 2000 and budget.budget.limit_for(("other",)) == 100
    assert budget.budget.thresholds == (0.5, 0.8, 1.0) and budget.budget.forecast is True


@pytest.mark.parametrize(
    ("line", "snippet", "expected"),
    [
        (6, "        signal: latency_second\n", "signal: unknown signal 'latency_second'"),
        (7, "        aggregate: p96.5x\n", "aggregate: bad percentile"),
        (7, "        aggregate: consecutive\n", "aggregate 'consecutive' does not apply to signal latency_seconds"),
        (8, "        by: [deploymnet]\n", "by[0]: unknown label 'deploymnet'"),
        (8, "        where: {team: \"~(\"}\n", "where.team: invalid regular expression"),
        (8, "        for: 5 minutes\n", "for: expected a duration"),
        (8, "        above_: 3\n", "above_: unknown key"),
        (8, "        scope: everywhere\n", "scope: expected local or global"),
        (8, "        min_events: -1\n", "min_events: expected at least 1, got -1"),
    ],
)
def test_errors_name_file_line_and_key(line, snippet, expected):
    text = ("groups:\n  - name: g\n    rules:\n      - alert: A\n        above: 1\n"
            "        signal: latency_seconds\n        aggregate: p95\n")
    lines = text.splitlines(keepends=True)
    key = snippet.strip().split(":", 1)[0]
    lines = [ln for ln in lines if not ln.strip().startswith(key + ":")]
    lines.insert(line - 1, snippet)
    errors = errors_of("".join(lines))
    assert any(e.startswith(f"rules.yml:{line}: groups[0].rules[0].") and expected in e for e in errors), errors


def test_every_problem_of_a_file_is_reported_in_line_order():
    errors = errors_of("""\
        groups:
          - name: g
            rules:
              - alert: A
                signal: nope
                above: 1
              - alert: B
                signal: errors
              - alert: C
                signal: errors
                above: 1
                below: 2
              - record: x
                expr: y
        """)
    assert errors == [
        "rules.yml:5: groups[0].rules[0].signal: unknown signal 'nope'; expected one of: "
        + errors[0].split("expected one of: ", 1)[1],
        "rules.yml:7: groups[0].rules[1]: rule 'B' needs exactly one of `above:` or `below:`",
        "rules.yml:9: groups[0].rules[2]: rule 'C' needs exactly one of `above:` or `below:`",
        "rules.yml:13: groups[0].rules[3]: recording rules are not supported: gatewatch rules are alerting rules",
    ]


def test_yaml_problems_and_duplicates():
    assert errors_of("groups:\n  - name: g\n    rules: [\n") [0].startswith("rules.yml:4: invalid YAML")
    dup = errors_of("groups:\n  - name: g\n    rules:\n      - alert: A\n        signal: errors\n"
                    "        signal: requests\n        above: 1\n")
    assert dup == ["rules.yml:6: duplicate key 'signal'"]
    assert errors_of("groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n") == [
        "rules.yml:4: name: group 'g' is already defined in rules.yml:2"]


def test_template_errors_are_validation_errors():
    errors = errors_of("""\
        groups:
          - name: g
            rules:
              - alert: A
                signal: errors
                by: [deployment]
                above: 1
                annotations:
                  summary: "{{ labels.region }} {{ value }}"
                  broken: "{{ value "
        """)
    assert errors[0].startswith("rules.yml:9: groups[0].rules[0].annotations.summary: template error: ")
    assert "region" in errors[0] and "labels available: alertname, deployment" in errors[0]
    assert errors[1].startswith("rules.yml:10: groups[0].rules[0].annotations.broken: template error")


def test_templates_are_sandboxed():
    errors = errors_of("""\
        groups:
          - name: g
            rules:
              - alert: A
                signal: errors
                above: 1
                annotations: {x: "{{ labels.__class__.__mro__ }}"}
        """)
    assert "template error" in errors[0]
    assert Template("{{ value | humanize_percentage }} {{ labels.d }}").render(
        {"value": 0.953, "labels": {"d": "x"}}) == "95.3% x"


def test_humanize_filters():
    assert humanize(1234567) == "1.235M" and humanize(0.0025) == "2.5m" and humanize(12) == "12"
    assert humanize_duration(3725) == "1h 2m 5s" and humanize_duration(0.25) == "250ms"
    assert humanize_percentage(0.5) == "50%"


@pytest.mark.parametrize(
    ("raw", "yes", "no"),
    [
        ("gpt-lab", ["gpt-lab"], ["gpt-lab2", ""]),
        ("!internal", ["x", ""], ["internal"]),
        ("~gpt-.*", ["gpt-4", "gpt-"], ["xgpt-4"]),
        ("!~gpt-.*", ["claude"], ["gpt-4"]),
        (["a", "b"], ["a", "b"], ["c"]),
        ("=!literal", ["!literal"], ["literal"]),
        ("~.+", ["x"], [""]),
    ],
)
def test_matchers(raw, yes, no):
    m = parse_rule_matcher("model_group", raw)
    assert all(m.matches_value(v) for v in yes) and not any(m.matches_value(v) for v in no)
    assert [m.matches({"model_group": v}) for v in yes + no] == [True] * len(yes) + [False] * len(no)


def test_where_and_tags_read_the_event():
    rule = next(iter(build("""\
        groups:
          - name: g
            rules:
              - alert: A
                signal: requests
                by: [tag_tenant]
                where: {tag_scenario: "~up.*", stream: "false"}
                above: 1
        """).rules()))
    e = Event(Kind.REQUEST, 0.0, tags=("tenant:acme", "scenario:upstream_429"))
    assert [m.matches_value(e.label(m.name)) for m in rule.where] == [True, True]
    assert e.label("tag_tenant") == "acme"


def test_values_file_overrides_without_copying(tmp_path: Path):
    values = """\
    rules:
      SlowDeployment:
        above: 45
        labels: {severity: critical, team: llm-platform}
        overrides:
          - match: {model_group: "~.*opus.*"}
            above: 90
      latency/TeamMonthlyBudget:
        budget: {limits: {research: 5000, ops: 50}}
    groups:
      latency: {interval: 30s}
    """
    rule_set = build(ISSUE_EXAMPLE, values=textwrap.dedent(values))
    slow, budget = list(rule_set.rules())
    assert slow.above == 45 and slow.labels == {"severity": "critical", "team": "llm-platform"}
    assert slow.overrides[0].above == 90 and slow.for_ == 120.0  # untouched keys stay
    assert budget.budget.limits == {"research": 5000.0, "ops": 50.0} and budget.budget.limit == 100
    assert rule_set.groups[0].interval == 30.0


def test_values_file_errors_point_at_the_values_file():
    errors = errors_of(ISSUE_EXAMPLE, values="rules:\n  SlowDeployment:\n    above: lots\n  Typo: {above: 1}\n")
    assert errors[0] == "values.yml:3: groups[0].rules[0].above: expected a number, got 'lots' (set by values file)"
    assert errors[1] == "values.yml:4: Typo: values for unknown rule 'Typo' (no loaded rule file has it)"
    with pytest.raises(RuleSetError) as info:
        parse_values("rules:\n  X:\n    alert: Y\n", "v.yml")
    assert str(info.value).startswith("v.yml:3: rules.X.alert: cannot be set from a values file")


def test_env_interpolation_and_disabled_rules():
    text = """\
        groups:
          - name: g
            rules:
              - alert: A
                signal: errors
                above: ${ERRORS_ABOVE:-5}
              - alert: B
                signal: errors
                above: 1
                disabled: ${B_OFF:-false}
        """
    assert [r.above for r in build(text).rules()] == [5.0, 1.0]
    rules = list(build(text, env={"ERRORS_ABOVE": "7", "B_OFF": "true"}).rules())
    assert [(r.alert, r.above) for r in rules] == [("A", 7.0)]


def test_compound_durations_and_limits():
    rule = next(iter(build("""\
        groups:
          - name: g
            rules:
              - alert: A
                signal: errors
                over: 1h30m
                for: 2m30s
                above: 1
        """).rules()))
    assert (rule.over, rule.for_) == (5400.0, 150.0)
    assert "expected a window between 1s and 7d" in errors_of(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        signal: errors\n        over: 8d\n"
        "        above: 1\n")[0]


def test_budget_validation():
    errors = errors_of("""\
        groups:
          - name: g
            rules:
              - alert: A
                budget:
                  signal: latency_seconds
                  period: fortnight
                  timezone: Mars/Olympus
                  thresholds: [0, 0.5]
                over: 5m
        """)
    text = "\n".join(errors)
    for expected in ("budget.signal: expected one of: cost_usd", "budget.period: expected one of: day, week, month",
                     "budget.timezone: unknown time zone 'Mars/Olympus'", "needs a default `limit:`",
                     "budget.thresholds[0]: expected a fraction", "over: not used by a budget rule"):
        assert expected in text, text


def test_quota_utilization_needs_the_deployment():
    assert "quota_utilization needs `deployment` in `by`" in errors_of(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        signal: quota_utilization\n"
        "        by: [model_group]\n        above: 0.9\n")[0]


def test_default_pack_is_found_and_valid(monkeypatch, tmp_path):
    assert default_rules_dir() == Path(__file__).resolve().parent.parent / "rules"
    files = [Path(f).name for f in expand(None)]
    assert files == ["bedrock_quota.yml", "budget.yml", "deployments.yml", "latency.yml", "litellm.yml",
                     "quota.yml"]  # not rules/tests/
    rule_set = load_rule_set(None)
    assert len(rule_set) == 29
    for rule in rule_set.rules():
        assert {"summary", "runbook"} <= set(rule.annotations), rule.id
        assert rule.scope == ("global" if rule.group in ("budget", "quota") else "local"), rule.id
        assert rule.labels.get("severity") in ("info", "warning", "critical"), rule.id
    monkeypatch.setenv("GATEWATCH_RULES_DIR", str(tmp_path))
    assert default_rules_dir() == tmp_path
    assert expand(["default", str(tmp_path / "x.yml")]) == [str(tmp_path / "x.yml")]


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(RuleSetError) as info:
        load_rule_set([str(tmp_path / "nope.yml")])
    assert str(info.value) == f"{tmp_path / 'nope.yml'}: file not found"


def test_cli_check(tmp_path, capsys):
    good = tmp_path / "good.yml"
    good.write_text(ISSUE_EXAMPLE)
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        signal: errors\n        above: x\n")
    assert main(["rules", "check", str(good)]) == 0
    assert f"{good}: OK, 2 rules" in capsys.readouterr().out
    assert main(["rules", "check", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:6: groups[0].rules[0].above: expected a number, got 'x'" in err
    assert main(["rules", "check"]) == 0  # the default pack
    assert "29 rules in 6 groups" in capsys.readouterr().out
