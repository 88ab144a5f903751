"""Every dashboard query, run by a real Prometheus scraping a real gatewatch.

A `gatewatch run` process ingests every captured LiteLLM callback and alert (twice, the
second time under new call ids, so counters grow between scrapes and rates are not zero);
Debian's Prometheus scrapes it (and LiteLLM's own captured /metrics, as a second job) every
second and evaluates the recording rules. Each panel query, its template variables expanded
as Grafana does with "All" selected (`$__rate_interval` = 1m ...), must return at least one
finite value through Prometheus's HTTP API, and every metric it names must be declared on
gatewatch's /metrics. A metric of a feature that is not in gatewatch yet (see FEATURES in
tests/dashboard_queries.py) skips that query; once the feature is wired in, the query must
work.

The same stack checks the panels of LiteLLM's own Grafana dashboards that the README
says work unchanged on gatewatch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import FIXTURES, ROOT, free_port, lab_env
from tests.dashboard_queries import (
    FEATURES,
    RULES_FILE,
    Query,
    data_needs,
    declared_metrics,
    expand,
    feature_of,
    feature_present,
    load_dashboards,
    metric_names,
    queries,
    recording_rules,
    split_label_values,
    strip_fallback,
    variable_defaults,
)

pytestmark = pytest.mark.integration

DASHBOARDS = load_dashboards()
SECOND_PASS_METRICS = ("litellm_spend_metric_total", "litellm_proxy_total_requests_metric_total",
                       "litellm_total_tokens_metric_total")
DATA_TIMEOUT = 60.0  # seconds a query may take to show data (rule evaluation, merge window, scrapes)
# every series of failed requests (released last, after the merge window) scraped 6 times
DWELL_QUERY = 'min(count_over_time(litellm_proxy_failed_requests_metric_total{job="gatewatch"}[1h])) >= 6'


def http(url: str, data: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(check, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ValueError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


# -- the stack -------------------------------------------------------------------------
@dataclass
class Stack:
    gatewatch: str
    prometheus: str
    features: dict[str, bool]
    ready_at: float = 0.0  # monotonic time the ingest had settled; data is awaited DATA_TIMEOUT past it
    first_pass: dict[str, float] = field(default_factory=dict)  # Prometheus's sums after the first pass
    settled: list[float] = field(default_factory=list)  # wall time each pass had settled (Prometheus time)
    exposition: str = ""
    declared: set[str] = field(default_factory=set)
    with_samples: set[str] = field(default_factory=set)

    def metrics_text(self) -> str:
        status, body = http(f"{self.gatewatch}/metrics")
        assert status == 200
        return body.decode()

    def refresh(self) -> None:
        self.exposition = self.metrics_text()
        self.declared, self.with_samples = declared_metrics(self.exposition)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode(params)
        status, body = http(url)
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", f"{expr}: {answer.get('error', body[:300])}"
        result = answer["data"]["result"]
        if answer["data"]["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        url = f"{self.prometheus}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": match})
        status, body = http(url)
        assert status == 200, body[:300]
        return json.loads(body)["data"]


def finite(result: list[dict[str, Any]]) -> list[float]:
    return [v for v in (float(r["value"][1]) for r in result) if math.isfinite(v)]


# LiteLLM's endpoints that gatewatch polls, answered with the captured bodies
HEALTH_ROUTES = {
    "/health/readiness": "health_health_readiness_no_key.json",
    "/health/liveliness": "health_health_liveliness_no_key.json",
    "/health/liveness": "health_health_liveness_no_key.json",
    "/health": "health_health_with_key.json",
    "/model/info": "health_model_info_with_key.json",
    "/v1/models": "health_v1_models_with_key.json",
}


class LoopbackPeer:
    """One real HTTP server on 127.0.0.1 for everything gatewatch talks to in this test: the
    LiteLLM proxy's health and model-info endpoints (captured answers), the OTLP/HTTP
    collector and the alert webhook receiver (both answer 200 and count what they got).
    It also serves LiteLLM's own captured /metrics/, which Prometheus scrapes as a second
    job, as the docker-compose stack does: same metric names, which the dashboards must
    keep apart from gatewatch's."""

    def __init__(self) -> None:
        self.received: dict[str, int] = {}
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                if self.path == "/metrics/":  # LiteLLM's own exposition, as captured
                    data = (FIXTURES / "prometheus_metrics.txt").read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                name = HEALTH_ROUTES.get(self.path.split("?", 1)[0])
                if name is None:
                    self.send_error(404)
                    return
                capture = json.loads((FIXTURES / name).read_text())
                body = capture["body"]
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(capture["status"])
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                peer.received[self.path] = peer.received.get(self.path, 0) + 1
                # an empty body is a valid empty OTLP Export*ServiceResponse as well
                self.send_response(200)
                self.send_header("Content-Type", self.headers.get("Content-Type") or "application/json")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackPeer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


TIME_FIELDS = ("startTime", "endTime", "completionStartTime")


def _capture_shift() -> float:
    """Seconds that move the captured traffic to just before now. The budget panels show the
    *current* period's spend: traffic captured last month has none, so without the shift
    they go empty on the first of every month (not only on a busy machine)."""
    latest = 0.0
    for path in FIXTURES.glob("generic_api_*.json"):
        body = json.loads(path.read_text())["body_json"]
        for item in body if isinstance(body, list) else [body]:
            latest = max([latest, *(item[f] for f in TIME_FIELDS if isinstance(item.get(f), (int, float)))])
    return time.time() - 5.0 - latest


def _capture_bodies(second_pass: bool, shift: float = 0.0) -> Iterator[tuple[str, bytes]]:
    """(route, body) of every captured callback and alert POST, in capture order, `shift` seconds later."""
    for path in sorted(FIXTURES.glob("generic_api_*.json")):
        capture = json.loads(path.read_text())
        body = capture["body_json"]
        for item in body if isinstance(body, list) else [body]:
            for key in TIME_FIELDS:
                if isinstance(item.get(key), (int, float)):
                    item[key] += shift
        if second_pass:  # the same traffic again, as new requests
            for item in body if isinstance(body, list) else [body]:
                for key in ("id", "litellm_call_id", "trace_id"):
                    if isinstance(item.get(key), str):
                        item[key] += "-again"
        yield "/v1/litellm/events", json.dumps(body).encode()
    for path in sorted(FIXTURES.glob("alert_*.json")):
        yield "/v1/litellm/alerts", json.dumps(json.loads(path.read_text())["body_json"]).encode()
    # one batch LiteLLM could never send: counted and skipped (the reject panels need it)
    yield "/v1/litellm/events", b'[{"not": "a payload"}, 42]'


def _gatewatch_config(tmp: Path, port: int, peer: LoopbackPeer, features: dict[str, bool]) -> dict[str, Any]:
    """The test's gatewatch.yaml: every feature that is wired in turned on against loopback."""
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "allow_unauthenticated_writes": True},
        "state_dir": str(tmp / "state"),
        "litellm": {"config": str(FIXTURES / "config.yaml"), "base_url": peer.url, "health_interval": "1s",
                    "logs": [str(tmp / "proxy.log")]},
        "attribution": {"ecs_metadata": False},
        "pipeline": {"request_merge_window": "1s"},
        "log_level": "warning",
    }
    if features["rules"]:
        # the default rule pack, evaluated every second instead of every 15 s / 1 min
        pack = tmp / "rules"
        pack.mkdir(exist_ok=True)
        for path in sorted((ROOT / "rules").glob("*.yml")):
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            for group in doc.get("groups", []):
                group["interval"] = "1s"
            (pack / path.name).write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        config["rules"] = [str(pack)]
    if features["otel"]:
        config["otel"] = {"enabled": True, "endpoint": peer.url, "protocol": "http/protobuf"}
    if features["cloudwatch"]:
        config["cloudwatch"] = {"enabled": True, "mode": "emf", "interval": "1s",
                                "emf_output": str(tmp / "emf.log")}
    if features["quotas"]:
        # Service Quotas is the local fake (AWS_ENDPOINT_URL_SERVICE_QUOTAS, set in `stack`)
        config["quotas"] = {"enabled": True, "evaluate_interval": "1s", "account_usage_interval": 0}
    if features["alert delivery"]:
        config["notify"] = {"receivers": [{"name": "dashboards-test", "webhook": {"url": f"{peer.url}/hook"}}],
                            "route": {"receiver": "dashboards-test", "group_wait": "0s", "group_interval": "1s"}}
    return config


def _append_proxy_logs(tmp: Path) -> None:
    """The captured proxy JSON log lines, as the proxy would write them (cooldowns, retries ...)."""
    with (tmp / "proxy.log").open("a", encoding="utf-8") as log:
        for path in sorted(FIXTURES.glob("logs_*.jsonl")):
            log.write(path.read_text(encoding="utf-8").rstrip("\n") + "\n")


def _ingest(base: str, tmp: Path, second_pass: bool, features: dict[str, bool], shift: float) -> None:
    for route, body in _capture_bodies(second_pass, shift):
        status, answer = http(base + route, body)
        assert status in (200, 202), (route, status, answer[:200])
    _append_proxy_logs(tmp)
    if features["alert delivery"]:
        # an alert straight into the router (as an external source would post it): the
        # delivery panels need one notification even where no rule fires on the fixtures
        alert = [{"labels": {"alertname": "DashboardsTest", "severity": "info", "pass": str(second_pass)},
                  "annotations": {"summary": "from tests/test_dashboards_prometheus.py"}}]
        status, answer = http(f"{base}/api/v1/alerts", json.dumps(alert).encode())
        assert status in (200, 202), (status, answer[:200])


def _settled(stack: Stack) -> bool:
    """gatewatch has released every held failure, and Prometheus has scraped that state."""
    stack.refresh()
    pending = [line for line in stack.exposition.splitlines() if line.startswith("gatewatch_pending_failed_requests ")]
    if not pending or float(pending[0].split()[1]) != 0:
        return False
    # the health poller publishes every second: only what the test sent has to have landed
    received = sum(float(line.rsplit(" ", 1)[1]) for line in stack.exposition.splitlines()
                   if line.startswith("gatewatch_events_received_total{") and 'source="health"' not in line)
    scraped = finite(stack.query('sum(gatewatch_events_received_total{job="gatewatch", source!="health"})'))
    # and Prometheus has scraped gatewatch since the last held failure was released
    released = finite(stack.query('max(gatewatch_pending_failed_requests{job="gatewatch"})'))
    return bool(scraped) and scraped[0] == received and released == [0.0]


def _process(argv: list[str], log_path: Path, cleanup: contextlib.ExitStack, **kw: Any) -> subprocess.Popen:
    """Start a process whose output goes to `log_path`; stopped (SIGTERM, then kill) on cleanup."""
    log = cleanup.enter_context(log_path.open("w"))
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **kw)

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    cleanup.callback(stop)
    return proc


def _tails(tmp: Path) -> str:
    return "".join(f"\n--- {name} (end) ---\n{(tmp / name).read_text(errors='replace')[-3000:]}"
                   for name in ("gatewatch.log", "prometheus.log") if (tmp / name).exists())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = shutil.which("prometheus")
    assert prometheus_bin, "prometheus missing: run scripts/install-test-deps.sh (Debian package prometheus)"
    tmp = tmp_path_factory.mktemp("dashboards")
    gw_port, prom_port = free_port(), free_port()
    features = {name: feature_present(name) for name in FEATURES}
    with contextlib.ExitStack() as cleanup:
        peer = cleanup.enter_context(LoopbackPeer())
        (tmp / "proxy.log").touch()
        (tmp / "gatewatch.yaml").write_text(yaml.safe_dump(_gatewatch_config(tmp, gw_port, peer, features)))
        env = {**os.environ, **lab_env()}
        env.pop("GATEWATCH_CONFIG", None)
        if features["quotas"]:
            from tests.servicequotas_support import FakeServiceQuotas

            haiku = "Anthropic Claude 3 Haiku"
            quotas = FakeServiceQuotas(quotas={"eu-central-1": [
                (f"On-demand InvokeModel tokens per minute for {haiku}", "L-DASH0001", 20000.0),
                (f"On-demand InvokeModel requests per minute for {haiku}", "L-DASH0002", 100.0)]})
            env["AWS_ENDPOINT_URL_SERVICE_QUOTAS"] = quotas.start()
            cleanup.callback(quotas.stop)
        _process([sys.executable, "-m", "agent.cli", "run", "--config", str(tmp / "gatewatch.yaml")],
                 tmp / "gatewatch.log", cleanup, env=env, cwd=ROOT)
        # the recording rules as shipped, evaluated every second instead of every minute or five
        rules = yaml.safe_load(RULES_FILE.read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
        (tmp / "rules.yml").write_text(yaml.safe_dump(rules))
        (tmp / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(tmp / "rules.yml")],
            "scrape_configs": [
                {"job_name": "gatewatch", "static_configs": [{"targets": [f"127.0.0.1:{gw_port}"]}]},
                {"job_name": "litellm", "metrics_path": "/metrics/",
                 "static_configs": [{"targets": [peer.url.removeprefix("http://")]}]},
            ],
        }))
        _process([prometheus_bin, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"], tmp / "prometheus.log", cleanup)
        base = f"http://127.0.0.1:{gw_port}"
        stack = Stack(base, f"http://127.0.0.1:{prom_port}", features)
        try:
            wait_until(lambda: http(f"{base}/readyz")[0] == 200, 60, "gatewatch /readyz")
            wait_until(lambda: http(f"{stack.prometheus}/-/ready")[0] == 200, 60, "prometheus ready")
            wait_until(lambda: len(finite(stack.query("up == 1"))) == 2, 30, "prometheus scraping both jobs")
            shift = _capture_shift()
            for second_pass in (False, True):
                _ingest(base, tmp, second_pass, features, shift)
                wait_until(lambda: _settled(stack), 90, "ingested events released and scraped")
                stack.settled.append(time.time())
                if not second_pass:
                    # a few more scrapes of the first pass's counters before the second, so rate()
                    # spans seconds of samples rather than one scrape (as it would in production)
                    wait_until(lambda: finite(stack.query(DWELL_QUERY)), 90, "scrapes of the first pass")
                    # what Prometheus holds once the first pass is in: the second pass adds as much
                    for metric in SECOND_PASS_METRICS:
                        stack.first_pass[metric] = finite(stack.query(f'sum({metric}{{job="gatewatch"}})'))[0]
            stack.refresh()
        except AssertionError as exc:
            raise AssertionError(f"{exc}{_tails(tmp)}") from None
        stack.ready_at = time.monotonic()
        yield stack


# -- checks ----------------------------------------------------------------------------
def _names_check(stack: Stack, names: set[str]) -> None:
    """Every name is declared on gatewatch's /metrics (or a recording rule over such names)."""
    rules = recording_rules()
    for name in sorted(names):
        if name in rules:
            _names_check(stack, metric_names(rules[name]))
            continue
        if name in stack.declared:
            continue
        feature = feature_of(name)
        if feature and not stack.features[feature]:
            pytest.skip(f"{name}: the {feature} feature is not in gatewatch yet")
        pytest.fail(f"{name} is not a metric gatewatch emits (not declared on /metrics"
                    + (f"; the {feature} feature exists but did not declare it)" if feature else ")"))


def _without_samples(stack: Stack, names: set[str]) -> set[str]:
    rules = recording_rules()
    out: set[str] = set()
    for name in names:
        if name in rules:
            out |= _without_samples(stack, metric_names(rules[name]))
        elif name not in stack.with_samples:
            out.add(name)
    return out


def _data_check(stack: Stack, expr: str) -> list[float]:
    """Poll until the query gives a finite value; then return the values."""
    names = metric_names(expr)
    # one budget for the whole module, not per query, but always a few scrapes' worth
    deadline = max(stack.ready_at + DATA_TIMEOUT, time.monotonic() + 3.0)
    # `rate(x[1m])` at "now" is empty once a minute has passed since the traffic, which on a
    # busy machine happens before the module is through its queries: ask at the moment the
    # second pass had settled too (data that comes later, e.g. from rule evaluation, is "now")
    settled_at = stack.settled[-1] + 2.0
    while True:
        values = finite(stack.query(expr)) or finite(stack.query(expr, at=settled_at))
        if values:
            return values
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    stack.refresh()
    missing = _without_samples(stack, names)
    for name in sorted(missing):
        absent = [f for f in data_needs(name) if not stack.features[f]]
        if absent:
            pytest.skip(f"no data: {name} needs the {' and '.join(absent)} feature, not in gatewatch yet")
    pytest.fail(f"query returned no finite value: {expr}\nmetrics without samples on gatewatch: {sorted(missing)}")


def grafana_values(stack: Stack, dashboard: str) -> dict[str, str]:
    """Variables as Grafana expands them with "All" selected, variable queries run for real."""
    def resolve(definition: str) -> list[str]:
        selector, label = split_label_values(definition)
        return stack.label_values(label, selector)

    return variable_defaults(DASHBOARDS[dashboard], resolve)


@pytest.mark.parametrize("query", queries(), ids=lambda q: q.id)
def test_panel_query_returns_data(stack: Stack, query: Query):
    expr = expand(query.expr, grafana_values(stack, query.dashboard))
    _names_check(stack, metric_names(expr))
    core = strip_fallback(expr)
    if core != expr:
        # `x or vector(0)`: the panel shows 0 when nothing happened; x itself must work
        # whenever its metrics have samples (errors and drops legitimately have none)
        stack.refresh()
        if _without_samples(stack, metric_names(core)):
            values = finite(stack.query(expr))
            assert values and all(v == 0 for v in values), values
            warnings.warn(f"{query.id} shows 0 through `or vector(0)`: "
                          f"{sorted(_without_samples(stack, metric_names(core)))} had no sample in this run",
                          stacklevel=1)
            return
    values = _data_check(stack, core)
    assert values


def _variable_queries() -> list[tuple[str, dict[str, Any]]]:
    return [(name, var) for name, dash in DASHBOARDS.items() for var in dash["templating"]["list"]
            if var["type"] == "query"]


@pytest.mark.parametrize("name, var", _variable_queries(), ids=lambda x: x if isinstance(x, str) else x["name"])
def test_template_variable_has_values(stack: Stack, name: str, var: dict[str, Any]):
    """label_values(metric{...}, label) as Grafana runs it: through the label values API."""
    definition = expand(var["definition"], grafana_values(stack, name))
    selector, label = split_label_values(definition)
    _names_check(stack, metric_names(selector))
    values = stack.label_values(label, selector)
    assert values and all(values), f"{var['name']}: no values for {definition}"
    if label == "job":
        assert values == ["gatewatch"]  # the test's scrape job; never LiteLLM's own
    if label in ("aws_account", "aws_region"):
        # the fixture catalog's accounts/regions are there, attributed from the LiteLLM config
        assert {"111111111111", "us-east-1"} & set(values)


def test_deployment_panels_show_the_catalog_accounts(stack: Stack):
    """Values, not just presence: per-deployment series carry the accounts of config.yaml."""
    result = stack.query("max by (model_id, aws_account, aws_region) "
                         '(litellm_deployment_state{model_group="gpt-lab"})')
    got = {r["metric"]["model_id"]: (r["metric"]["aws_account"], r["metric"]["aws_region"]) for r in result}
    assert got.get("gpt-lab-acct111-use1") == ("111111111111", "us-east-1")
    assert got.get("gpt-lab-acct222-euw1") == ("222222222222", "eu-west-1")
    # rpm utilization joins attempts with the configured limit (rpm: 600 on acct111)
    expr = expand(next(q.expr for q in queries() if q.panel == "RPM utilization"),
                  grafana_values(stack, "gatewatch-deployments.json"))
    joined = stack.query(expr)
    assert [r["metric"]["model_id"] for r in joined] == ["gpt-lab-acct111-use1"]


def _exposition_total(stack: Stack, metric: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in stack.exposition.splitlines()
               if line.startswith(metric + "{"))


def test_prometheus_saw_exactly_the_second_pass(stack: Stack):
    """Values, end to end: the second pass replays the same traffic, so what Prometheus saw
    grow between the passes is half of what gatewatch counted in all (spend, requests).
    The baseline is what Prometheus held once the first pass had settled, not the first
    sample of each series: on a busy machine a scrape lands in the middle of a pass."""
    stack.refresh()
    for metric in SECOND_PASS_METRICS:
        counted = _exposition_total(stack, metric)
        assert counted > 0, metric
        [now] = finite(stack.query(f'sum({metric}{{job="gatewatch"}})'))
        assert now == pytest.approx(counted, rel=1e-9), metric
        assert now - stack.first_pass[metric] == pytest.approx(counted / 2, rel=1e-9), metric


def test_overview_error_ratio_is_the_fixture_ratio(stack: Stack):
    """The overview's error ratio panel = failed / total client requests of the fixtures."""
    stack.refresh()
    expected = (_exposition_total(stack, "litellm_proxy_failed_requests_metric_total")
                / _exposition_total(stack, "litellm_proxy_total_requests_metric_total"))
    assert 0 < expected < 1
    expr = expand(next(q.expr for q in queries() if q.dashboard == "gatewatch-overview.json"
                       and q.panel == "Error ratio"), grafana_values(stack, "gatewatch-overview.json"))
    # evaluated where its 1m window holds the second pass and nothing of the first (whose
    # series were born mid-pass, so rate() cannot see all of it): not at "now", which on a
    # busy machine is minutes later, with only a slice of the traffic in the window
    first, second = stack.settled
    at = max(second, first + 61.0)
    wait_until(lambda: time.time() > at + 3, 90, "the evaluation time to pass")
    [value] = finite(stack.query(expr, at=at))
    # rate() extrapolates each series over its own sampled span; failures are released a
    # merge window after successes, so their span is a scrape or two shorter: a few percent
    assert value == pytest.approx(expected, rel=0.05)


# -- LiteLLM's own dashboards ------------------------------------------------------------
# Queries of the panels of LiteLLM's published Grafana dashboards (BerriAI/litellm,
# cookbook/litellm_proxy_server/grafana_dashboard) that dashboards/README.md lists as working
# unchanged on gatewatch: the claim is checked here, query by query.
LITELLM_PANELS = {
    "all_metrics: litellm_proxy_total_requests_metric rate":
        "sum(rate(litellm_proxy_total_requests_metric_total[$__rate_interval])) by (status_code)",
    "all_metrics: litellm_proxy_failed_requests_metric rate":
        "sum(rate(litellm_proxy_failed_requests_metric_total[$__rate_interval])) by (exception_class)",
    "all_metrics: litellm_request_total_latency_metric p95":
        "histogram_quantile(0.95, sum(rate(litellm_request_total_latency_metric_bucket[$__rate_interval])) by (le))",
    "all_metrics: litellm_llm_api_latency_metric p95":
        "histogram_quantile(0.95, sum(rate(litellm_llm_api_latency_metric_bucket[$__rate_interval])) by (le))",
    "all_metrics: litellm_llm_api_time_to_first_token_metric p95":
        "histogram_quantile(0.95, sum(rate(litellm_llm_api_time_to_first_token_metric_bucket[$__rate_interval]))"
        " by (le))",
    "all_metrics: litellm_overhead_latency_metric p95":
        "histogram_quantile(0.95, sum(rate(litellm_overhead_latency_metric_bucket[$__rate_interval])) by (le))",
    "all_metrics: litellm_deployment_latency_per_output_token p95":
        "histogram_quantile(0.95, sum(rate(litellm_deployment_latency_per_output_token_bucket[$__rate_interval]))"
        " by (le))",
    "all_metrics: litellm_spend_metric rate": "sum(rate(litellm_spend_metric_total[$__rate_interval])) by (model)",
    "all_metrics: litellm_total_tokens_metric rate":
        "sum(rate(litellm_total_tokens_metric_total[$__rate_interval])) by (model)",
    "all_metrics: litellm_input_tokens_metric rate":
        "sum(rate(litellm_input_tokens_metric_total[$__rate_interval])) by (model)",
    "all_metrics: litellm_output_tokens_metric rate":
        "sum(rate(litellm_output_tokens_metric_total[$__rate_interval])) by (model)",
    "all_metrics: litellm_deployment_state": "max by (litellm_model_name, api_base) (litellm_deployment_state)",
    "all_metrics: litellm_deployment_total_requests rate":
        "sum(rate(litellm_deployment_total_requests_total[$__rate_interval])) by (requested_model)",
    "all_metrics: litellm_deployment_success_responses rate":
        "sum(rate(litellm_deployment_success_responses_total[$__rate_interval])) by (requested_model)",
    "all_metrics: litellm_deployment_failure_responses rate":
        "sum(rate(litellm_deployment_failure_responses_total[$__rate_interval])) by (litellm_model_name,"
        " exception_class)",
    "all_metrics: litellm_deployment_cooled_down rate":
        "sum(rate(litellm_deployment_cooled_down_total[$__rate_interval])) by (litellm_model_name, exception_status)",
    "all_metrics: litellm_deployment_successful_fallbacks rate":
        "sum(rate(litellm_deployment_successful_fallbacks_total[$__rate_interval])) by (requested_model,"
        " fallback_model)",
    "all_metrics: litellm_deployment_rpm_limit": "max by (litellm_model_name, api_base) (litellm_deployment_rpm_limit)",
    "all_metrics: litellm_deployment_tpm_limit": "max by (litellm_model_name, api_base) (litellm_deployment_tpm_limit)",
    "all_metrics: litellm_remaining_requests_metric":
        "min by (model_group, api_provider) (litellm_remaining_requests_metric)",
    "all_metrics: litellm_remaining_tokens_metric":
        "min by (model_group, api_provider) (litellm_remaining_tokens_metric)",
    "v2: requests per second": "sum(rate(litellm_proxy_total_requests_metric_total[2m]))",
    "v2: failures by exception class":
        "sum(rate(litellm_proxy_failed_requests_metric_total[2m])) by (exception_class)",
    "v2: average latency": "sum(rate(litellm_request_total_latency_metric_sum[2m]))"
                           "/sum(rate(litellm_request_total_latency_metric_count[2m]))",
    "v2: median latency": "histogram_quantile(0.5, sum(rate(litellm_request_total_latency_metric_bucket[2m])) by (le))",
    "v2: requests per second by key alias":
        "sum(rate(litellm_proxy_total_requests_metric_total[2m])) by (api_key_alias)",
    "v2: requests per second by team alias":
        "sum(rate(litellm_proxy_total_requests_metric_total[2m])) by (team_alias)",
    "dashboard_1: spend": "sum(increase(litellm_spend_metric_total[30d])) by (model)",
    "dashboard_1: spend by team": "sum(increase(litellm_spend_metric_total[30d])) by (hashed_api_key)",
}


# Works unchanged by name and labels, but no captured scenario has a failed fallback, so
# the proxy logs give it no sample: checked by name only.
LITELLM_NAMES_ONLY = {
    "all_metrics: litellm_deployment_failed_fallbacks rate":
        "sum(rate(litellm_deployment_failed_fallbacks_total[$__rate_interval])) by (requested_model, fallback_model)",
}


def only_gatewatch(expr: str) -> str:
    """LiteLLM's query, its selectors limited to the gatewatch job: the test's Prometheus
    also scrapes LiteLLM's own captured /metrics, which would answer these by itself."""
    assert "{" not in expr
    for name in metric_names(expr):
        expr = re.sub(rf"\b{re.escape(name)}\b", f'{name}{{job="gatewatch"}}', expr)
    return expr


@pytest.mark.parametrize("title", sorted(LITELLM_PANELS))
def test_litellm_dashboard_panel_works_unchanged(stack: Stack, title: str):
    expr = expand(LITELLM_PANELS[title], {"__rate_interval": "1m"})
    _names_check(stack, metric_names(expr))
    assert _data_check(stack, only_gatewatch(expr))


@pytest.mark.parametrize("title", sorted(LITELLM_NAMES_ONLY))
def test_litellm_dashboard_panel_names_exist(stack: Stack, title: str):
    expr = expand(LITELLM_NAMES_ONLY[title], {"__rate_interval": "1m"})
    _names_check(stack, metric_names(expr))
    assert stack.query(only_gatewatch(expr)) == []  # valid PromQL; empty until a fallback fails


def test_litellm_own_series_stay_out_of_the_dashboards(stack: Stack):
    """Prometheus here also scrapes LiteLLM's own /metrics (same names): `$job` keeps the
    dashboards on gatewatch's series."""
    stack.refresh()
    ours = [line for line in stack.exposition.splitlines() if line.startswith("litellm_deployment_state{")]
    assert finite(stack.query('count(litellm_deployment_state{job="litellm"})'))  # the other job is there
    values = grafana_values(stack, "gatewatch-deployments.json")
    assert values["job"] == "(gatewatch)"
    expr = expand(next(q.expr for q in queries() if q.panel == "Deployment state"), values)
    shown = stack.query(expr)
    assert 0 < len(shown) <= len(ours)
    assert all(r["metric"].get("aws_account") for r in shown)  # LiteLLM's own series have no account
