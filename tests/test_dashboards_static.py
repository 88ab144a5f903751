"""The Grafana dashboards, provisioning files and recording rules, checked without servers.

Valid Grafana JSON (schemaVersion, unique panel ids, a datasource variable every panel
uses, a layout that fits the grid), PromQL that parses, metric names gatewatch declares,
recording rules that `promtool check rules` and `promtool test rules` accept, and
dashboards that are exactly what dashboards/build.py generates.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess

import pytest
import yaml

from agent.app import GatewatchApp
from agent.config import parse_config
from tests.dashboard_queries import (
    BUILD_SCRIPT,
    DASHBOARD_DIR,
    FEATURES,
    PROVISIONING_DIR,
    RULES_FILE,
    RULES_TEST_FILE,
    VAR,
    all_panels,
    declared_metrics,
    expand,
    load_dashboards,
    metric_names,
    queries,
    recording_rules,
    selectors,
    strip_fallback,
    variable_defaults,
)

DASHBOARDS = load_dashboards()
EXPECTED = {"gatewatch-overview.json", "gatewatch-deployments.json", "gatewatch-spend.json",
            "gatewatch-alerts.json", "gatewatch-self.json"}
SCOPED = {"gatewatch-overview.json", "gatewatch-deployments.json", "gatewatch-spend.json"}


def _build_module():
    spec = importlib.util.spec_from_file_location("gatewatch_dashboards_build", BUILD_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_dashboard_is_present():
    assert set(DASHBOARDS) == EXPECTED


def test_committed_json_is_what_build_py_generates():
    generated = _build_module().render_all()
    assert set(generated) == EXPECTED
    for name, text in generated.items():
        assert (DASHBOARD_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} differs from dashboards/build.py output: run `python dashboards/build.py`")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dashboard_is_valid_grafana_json(name):
    dash = DASHBOARDS[name]
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert dash["uid"] and len(dash["uid"]) <= 40 and dash["title"].startswith("gatewatch / ")
    assert dash["id"] is None  # provisioned dashboards must not carry a database id
    assert dash["time"]["from"].startswith("now-")
    panels = list(all_panels(dash))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}"
    assert all(isinstance(i, int) and i > 0 for i in ids)
    occupied: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in occupied, f"{panel['title']!r} overlaps {occupied[(x, y)]!r}"
                occupied[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "gauge", "bargauge", "table", "state-timeline"}
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["description"], f"{panel['title']!r} has no description"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == panel["datasource"] and t["expr"].strip()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_template_variables(name):
    variables = {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    wanted = {"model_group", "aws_account", "aws_region"} if name in SCOPED else {"instance"}
    for var in wanted | {"job"}:
        assert variables[var]["type"] == "query" and variables[var]["includeAll"] and variables[var]["multi"]
        assert variables[var]["datasource"]["uid"] == "${datasource}"
        assert variables[var]["allValue"] == (None if var == "job" else ".*")
    # "All" jobs = the jobs that expose gatewatch_ready, never `.*` (LiteLLM's own /metrics)
    assert variables["job"]["definition"] == "label_values(gatewatch_ready, job)"
    wanted.add("job")
    # every variable a query uses is defined, and every defined scope variable is used
    used = {next(g for g in m.groups() if g) for q in queries() if q.dashboard == name
            for m in VAR.finditer(q.expr)}
    assert used - set(variables) - {"__rate_interval", "__interval", "__range"} == set()
    assert wanted <= used


@pytest.mark.parametrize("query", queries(), ids=lambda q: q.id)
def test_query_is_valid_promql(query):
    expr = expand(query.expr, variable_defaults(DASHBOARDS[query.dashboard]))
    assert "$" not in expr
    assert metric_names(expr), "a panel query that selects no metric"
    metric_names(strip_fallback(expr))
    # every selector keeps to gatewatch's scrape jobs (Prometheus may scrape LiteLLM's own
    # /metrics too, with the same names): literally job=~"$job" in the JSON
    marked = expand(query.expr, {**variable_defaults(DASHBOARDS[query.dashboard]), "job": "JOBVAR"})
    for name, labels in selectors(marked):
        assert labels.get("job") == "JOBVAR", f"{name} is not limited to $job"


def test_queries_name_only_metrics_gatewatch_declares():
    """Typos fail here, before any server: a name must be on gatewatch's registry (core),
    a recording rule over such names, or a metric of a feature module listed in FEATURES
    (tests/test_dashboards_prometheus.py checks those against the running feature)."""
    gw = GatewatchApp(parse_config({"attribution": {"ecs_metadata": False}}))
    from prometheus_client.exposition import generate_latest

    declared, _ = declared_metrics(generate_latest(gw.registry).decode())
    rules = recording_rules()
    for rule_expr in rules.values():
        assert metric_names(rule_expr) <= declared, rule_expr
    feature_prefixes = tuple(p for prefixes, _ in FEATURES.values() for p in prefixes)
    unknown = {}
    for q in queries():
        expr = expand(q.expr, variable_defaults(DASHBOARDS[q.dashboard]))
        for name in metric_names(expr) - declared - set(rules):
            if not name.startswith(feature_prefixes):
                unknown[q.id] = name
    assert unknown == {}


def test_recording_rules_pass_promtool_check_and_unit_tests():
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run scripts/install-test-deps.sh (Debian package prometheus)"
    check = subprocess.run([promtool, "check", "rules", str(RULES_FILE)], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(recording_rules())} rules found" in check.stdout
    unit = subprocess.run([promtool, "test", "rules", RULES_TEST_FILE.name], capture_output=True, text=True,
                          cwd=RULES_TEST_FILE.parent, timeout=60)
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_recording_rules_are_used_and_spend_windows_tile():
    rules = recording_rules()
    exprs = " ".join(q.expr for q in queries())
    assert all(name in exprs for name in rules), "a recording rule no panel uses"
    doc = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        for rule in group["rules"]:
            if ":increase" in rule["record"]:
                window = rule["record"].rsplit(":increase", 1)[1]
                assert group["interval"] == window and f"[{window}]" in rule["expr"], (
                    "an increase rule whose window differs from its group interval double-counts or loses spend")


def test_provisioning_files():
    ds = yaml.safe_load((PROVISIONING_DIR / "datasources" / "gatewatch.yml").read_text())
    assert ds["apiVersion"] == 1
    [source] = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http") and source["access"] == "proxy"
    dashboards = yaml.safe_load((PROVISIONING_DIR / "dashboards" / "gatewatch.yml").read_text())
    assert dashboards["apiVersion"] == 1
    [provider] = dashboards["providers"]
    # the docker-compose stack mounts dashboards/grafana/ here
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_every_feature_the_dashboards_chart_is_wired_into_gatewatch():
    """The dashboards test skips a metric of a feature "not in gatewatch yet"; every feature is
    in now, so a move of its install hook must not silently turn those checks into skips."""
    from tests.dashboard_queries import FEATURES, feature_present

    assert {f: feature_present(f) for f in FEATURES} == dict.fromkeys(FEATURES, True)
