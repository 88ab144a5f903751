"""One `Matcher` for rule `where`s, routes, silences and inhibitions (issue 17).

A matcher written for a route (`{deployment=~"gpt-.*"}`) and the same condition in a rule
file (`deployment: ~gpt-.*`) are equal objects that select the same label sets, whether a
rule filters events with it, a route picks a receiver or a silence mutes an alert.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap

import pytest
import yaml

from agent.alerts.config import InhibitRuleConfig, RouteConfig
from agent.alerts.router import InhibitRule, compile_route
from agent.alerts.silences import Silence, silence_from_request
from agent.events import Event, Kind
from agent.matchers import Matcher, MatcherError, parse_matcher, parse_matcher_object, parse_matchers
from agent.rules.batch import ALL, BatchMemo, matcher_mask
from agent.rules.exports.prometheus import export_prometheus
from agent.rules.model import parse_rule_matcher
from agent.rules.schema import build_rule_set

LABEL_SETS = [{"deployment": "gpt-4o"}, {"deployment": "gpt-"}, {"deployment": "xgpt-4o"},
              {"deployment": "claude"}, {"deployment": ""}, {}]


def _rule_where(where: str):
    text = textwrap.dedent(f"""\
        groups:
          - name: g
            rules:
              - alert: A
                signal: requests
                by: [deployment]
                where: {{deployment: {where}}}
                above: 1
        """)
    rule = next(iter(build_rule_set([("rules.yml", text)], env={}).rules()))
    return rule.where[0]


def test_a_route_matcher_and_a_rule_matcher_are_the_same_object():
    from_route = parse_matchers('{deployment=~"gpt-.*"}')[0]
    from_rule = _rule_where('"~gpt-.*"')
    assert type(from_route) is type(from_rule) is Matcher
    assert from_route == from_rule and hash(from_route) == hash(from_rule)
    assert [from_rule.matches(labels) for labels in LABEL_SETS] == [True, True, False, False, False, False]
    assert [from_route.matches(labels) for labels in LABEL_SETS] == [from_rule.matches(ls) for ls in LABEL_SETS]


def test_the_rule_matcher_routes_silences_and_inhibits_like_the_alertmanager_one():
    matcher = _rule_where('"~gpt-.*"')
    child = RouteConfig(receiver="gpt", matchers=['deployment=~"gpt-.*"'])
    route = compile_route(RouteConfig(receiver="root", routes=[child]))
    assert route.children[0].matchers == [matcher]
    silence = Silence(id="s", matchers=[matcher], starts_at=0.0, ends_at=10.0, created_by="t", comment="",
                      updated_at=0.0)
    posted = silence_from_request({"matchers": [matcher.to_api()], "endsAt": 10.0}, now=0.0)
    assert posted.matchers == [matcher]
    inhibit = InhibitRule.from_config(InhibitRuleConfig(source_matchers=['alertname="Down"'],
                                                        target_matchers=['deployment=~"gpt-.*"'], equal=[]))
    assert inhibit.target == [matcher]
    for labels in LABEL_SETS:
        hit = matcher.matches(labels)
        assert [r.receiver for r in route.match(labels)] == (["gpt"] if hit else ["root"])
        assert silence.mutes(labels, now=5.0) is hit and posted.mutes(labels, now=5.0) is hit


def test_the_rule_filters_events_with_the_shared_matcher():
    matcher = _rule_where('"~gpt-.*"')
    events = [Event(Kind.REQUEST, 0.0, deployment=ls.get("deployment", "")) for ls in LABEL_SETS]
    memo = BatchMemo(events)
    mask = memo.where(frozenset({Kind.REQUEST}), lambda e: e.deployment, matcher)
    assert mask is not ALL and mask == [matcher.matches(ls) for ls in LABEL_SETS] == [True, True] + [False] * 4


@pytest.mark.parametrize("raw", ["gpt-4o", "!gpt-4o", "~gpt-.*", "!~gpt-.*", "=!x", ["gpt-4o", "a.b", ""], ""])
def test_matcher_mask_is_matches_value_for_every_operator(raw):
    m = parse_rule_matcher("deployment", raw)
    values = ["gpt-4o", "gpt-", "a.b", "axb", "", "!x", "x"]
    assert matcher_mask(m, values) == [m.matches_value(v) for v in values]
    assert [m.matches({"deployment": v}) for v in values] == [m.matches_value(v) for v in values]


def test_any_of_reads_as_an_anchored_regex_to_alertmanager():
    m = Matcher.create_any_of("model_group", ["gpt-lab", "a.b", "bedrock-lab"])
    assert m.op == "in" and m.operator == "=~" and m.any_of == frozenset({"gpt-lab", "a.b", "bedrock-lab"})
    assert m.to_api() == {"name": "model_group", "value": re.escape("a.b") + "|bedrock\\-lab|gpt\\-lab",
                          "isRegex": True, "isEqual": True}
    assert m.describe() == "model_group in ['a.b', 'bedrock-lab', 'gpt-lab']"
    # what Alertmanager (and a silence stored from to_api) makes of it selects the same values
    for back in (parse_matcher(str(m)), parse_matcher_object(m.to_api())):
        for value in ["gpt-lab", "a.b", "axb", "bedrock-lab", "gpt-lab2", ""]:
            assert back.matches({"model_group": value}) is m.matches({"model_group": value}), value
    assert Matcher.create_any_of("x", ["b", "a"]) == parse_rule_matcher("x", ["a", "b", "a"])
    with pytest.raises(MatcherError):
        Matcher.create_any_of("x", [])


def test_describe_keeps_the_rule_spelling():
    """Rule window identities hash `describe()`, and they are stored (Redis, budgets)."""
    assert [parse_rule_matcher("team", raw).describe() for raw in ["a", "!a", "~a.*", "!~a.*", ["b", "a"]]] == [
        "team='a'", "team!='a'", "team=~'a.*'", "team!~'a.*'", "team in ['a', 'b']"]


def test_a_list_where_exports_to_promql_prometheus_parses_and_matches(tmp_path):
    """A rule's list (any of) is a regex in PromQL: its escapes must be escaped again inside the
    PromQL string (`"gpt\\\\-lab"`), or Prometheus refuses the rule (`unknown escape sequence`)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (scripts/install-test-deps.sh installs Debian's prometheus package)")
    text = textwrap.dedent("""\
        groups:
          - name: g
            interval: 15s
            rules:
              - alert: ListedFailing
                signal: errors
                aggregate: count
                over: 1m
                by: [model_group]
                where: {model_group: [gpt-lab, a.b]}
                above: 1
        """)
    exported = export_prometheus(build_rule_set([("rules.yml", text)], env={}))
    assert not exported.skipped
    expr = exported.groups[0]["rules"][0]["expr"]
    assert 'model_group=~"a\\\\.b|gpt\\\\-lab"' in expr, expr
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": exported.groups}))
    series = "litellm_deployment_failure_responses_total{{model_group=\"{}\"}}"
    (tmp_path / "t.yml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yml"], "evaluation_interval": "15s",
        "tests": [{"interval": "15s",
                   "input_series": [{"series": series.format(group), "values": "0+2x20"}
                                    for group in ("gpt-lab", "a.b", "axb", "gpt-lab2")],
                   "alert_rule_test": [{"eval_time": "2m", "alertname": "ListedFailing",
                                        "exp_alerts": [{"exp_labels": {"model_group": "a.b"}},
                                                       {"exp_labels": {"model_group": "gpt-lab"}}]}]}]}))
    checked = subprocess.run([promtool, "test", "rules", "t.yml"], capture_output=True, text=True, cwd=tmp_path,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
