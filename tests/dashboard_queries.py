"""Reading gatewatch's Grafana dashboards for tests: targets, variable expansion, metric names.

Shared by tests/test_dashboards_static.py (JSON, PromQL syntax, promtool) and
tests/test_dashboards_prometheus.py (every query against a real Prometheus).
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "dashboards" / "grafana"
PROVISIONING_DIR = DASHBOARD_DIR / "provisioning"
RULES_FILE = ROOT / "dashboards" / "prometheus" / "recording_rules.yml"
RULES_TEST_FILE = ROOT / "dashboards" / "prometheus" / "recording_rules_test.yml"
BUILD_SCRIPT = ROOT / "dashboards" / "build.py"

# Grafana's built-in interval variables, replaced by concrete windows. The test's data is
# at most a minute old, so every window below covers all of it.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h", "__range_s": "3600"}
FALLBACK = re.compile(r"\s+or\s+(on\s*\(\s*\)\s*)?vector\(0\)\s*$")
VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")

# Metrics that other gatewatch features register when they are on: (metric name prefixes,
# module paths of the feature). A query naming such a metric is excused (skipped) only while
# the feature is not wired into gatewatch (see feature_present); names as agreed in the
# coordination notes of issue 8.
FEATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "log tail": (("gatewatch_tail_",), ("agent.sources.tail", "agent.sources.feature")),
    "health polling": (("gatewatch_health_poll",), ("agent.sources.health", "agent.sources.feature")),
    "rules": (("gatewatch_alerts", "gatewatch_rule_", "gatewatch_rules_", "gatewatch_budget_"), ("agent.rules",)),
    "alert delivery": (("gatewatch_notifications", "gatewatch_outbox_", "gatewatch_dead_letters"),
                       ("agent.alerts.service", "agent.alerts.outbox", "agent.alerts.notify")),
    # both installed by agent.sinks.feature (the sinks' feature hooks)
    "otel": (("gatewatch_otel_",), ("agent.sinks.otel", "agent.otel", "agent.sinks.feature")),
    "cloudwatch": (("gatewatch_cloudwatch_",), ("agent.sinks.cloudwatch", "agent.sinks.feature")),
    "quotas": (("gatewatch_quota_",), ("agent.quotas",)),
}
# Metrics whose data needs features beyond the one that declares them: the core declares the
# cooldown / no-deployments / failed-fallback / proxy-up metrics, but only the proxy's log
# lines and health endpoints feed them; notifications need an alert to deliver.
DATA_NEEDS: dict[str, tuple[str, ...]] = {
    "litellm_deployment_cooled_down_total": ("log tail",),
    "gatewatch_no_deployments_available_total": ("log tail",),
    "litellm_deployment_failed_fallbacks_total": ("log tail",),
    "gatewatch_proxy_up": ("health polling",),
    "gatewatch_alerts": ("rules",),
}


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref: str
    expr: str  # as in the JSON, with Grafana variables

    @property
    def id(self) -> str:
        return f"{self.dashboard.removeprefix('gatewatch-').removesuffix('.json')}:{self.panel}:{self.ref}"


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and panels nested in collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries() -> list[Query]:
    out = []
    for name, dash in load_dashboards().items():
        for panel in all_panels(dash):
            for t in panel.get("targets", []):
                out.append(Query(name, panel["title"], t["refId"], t["expr"]))
    return out


def variable_defaults(dashboard: dict[str, Any], resolve: Callable[[str], list[str]] | None = None) -> dict[str, str]:
    """What each template variable expands to, as Grafana does with "All" selected: its
    `allValue`, else the regex of all its values (`resolve(definition)` runs the variable's
    query; without it `.*`), and a textbox's default."""
    values: dict[str, str] = dict(BUILTINS)
    for var in dashboard.get("templating", {}).get("list", []):
        if var["type"] == "query":
            if var.get("allValue"):
                values[var["name"]] = var["allValue"]
            elif resolve is None:
                values[var["name"]] = ".*"
            else:
                found = resolve(expand(var["definition"], values))
                values[var["name"]] = "(" + "|".join(re.escape(v) for v in found) + ")"
        elif var["type"] in ("textbox", "constant", "custom"):
            values[var["name"]] = str(var.get("query", "")).split(",")[0].strip()
        elif var["type"] == "datasource":
            values[var["name"]] = "prometheus"
    return values


def expand(expr: str, values: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise KeyError(f"undefined variable ${name} in {expr!r}")
        return values[name]

    return VAR.sub(sub, expr)


def strip_fallback(expr: str) -> str:
    """`x or vector(0)` -> `x`: the panel shows 0 rather than "No data" when nothing happened."""
    return FALLBACK.sub("", expr)


def metric_names(expr: str) -> set[str]:
    """Metric names of every selector in a (variable-free) PromQL expression."""
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for m in node.matchers.matchers:
                if m.name == "__name__" and str(m.op) == "MatchOp.Equal":
                    names.add(m.value)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """(metric name, {label: value}) of every selector in a (variable-free) PromQL expression."""
    out: list[tuple[str, dict[str, str]]] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            out.append((node.name or "", {m.name: m.value for m in node.matchers.matchers}))
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return out


def split_label_values(definition: str) -> tuple[str, str]:
    """`label_values(metric{...}, label)` -> (selector, label)."""
    inner = definition.strip().removeprefix("label_values(").removesuffix(")")
    selector, label = (part.strip() for part in inner.rsplit(",", 1))
    return selector, label


def recording_rules() -> dict[str, str]:
    """record name -> expr, from dashboards/prometheus/recording_rules.yml."""
    doc = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    return {r["record"]: r["expr"] for g in doc["groups"] for r in g["rules"] if "record" in r}


def declared_metrics(exposition: str) -> tuple[set[str], set[str]]:
    """(names declared on /metrics, names with at least one sample) of a text exposition.

    A labelled metric without children prints only its HELP/TYPE lines: it is declared
    (gatewatch emits it) but has no sample yet. Histograms declare _bucket/_sum/_count.
    """
    declared: set[str] = set()
    with_samples: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            declared.add(name)
            if kind.strip() in ("histogram", "gaugehistogram"):
                declared.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            elif kind.strip() == "summary":
                declared.update({f"{name}_sum", f"{name}_count"})
        elif line and not line.startswith("#"):
            name = re.split(r"[{\s]", line, maxsplit=1)[0]
            with_samples.add(name)
            declared.add(name)
    return declared, with_samples


def feature_of(metric: str) -> str | None:
    """The feature that declares `metric`, or None for the core."""
    for feature, (prefixes, _) in FEATURES.items():
        if metric.startswith(prefixes):
            return feature
    return None


def data_needs(metric: str) -> tuple[str, ...]:
    """Every feature that must run for `metric` to have samples."""
    own = feature_of(metric)
    return tuple(dict.fromkeys(((own,) if own else ()) + DATA_NEEDS.get(metric, ())))


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def feature_present(feature: str) -> bool:
    """The feature's module exists and gatewatch wires it in: one of agent.features'
    installers comes from it, or the core (agent/app.py) imports it."""
    from agent import app, features

    modules = [m for m in FEATURES[feature][1] if _module_exists(m)]
    if not modules:
        return False
    installed = {fn.__module__ for fn in features._installers()}
    core = Path(app.__file__).read_text(encoding="utf-8") + Path(features.__file__).read_text(encoding="utf-8")
    for module in modules:
        parent, _, last = module.rpartition(".")
        if any(m == module or m.startswith(module + ".") for m in installed):
            return True
        if re.search(rf"\b{re.escape(module)}\b|from {re.escape(parent)} import [^\n]*\b{last}\b", core):
            return True
    return False
