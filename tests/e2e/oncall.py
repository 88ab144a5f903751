"""The default rule pack scored as on-call would (issue 18): scenarios against a real LiteLLM proxy.

One lab of its own (fake upstream, gatewatch, LiteLLM proxy, a webhook receiver for the pages),
run once in time order:

    gatewatch up ── lead ── proxy starts ─ boots ─ ready ┐
    traffic scenarios, concurrently (each on its own deployments/accounts) ──────────────────┤
    proxy paused 20 s (scaled) ── proxy gone for good ───────────────────────────────────────┘

Every time of the shipped pack is divided by ONE factor (`SCALE`): each rule's `for`, `over`,
`keep_firing_for`, each group's `interval`, and `litellm.start_grace`; the scenarios' own
durations (the sidecar's lead over the proxy, the proxy's pause) are scaled the same way.
Thresholds, `min_events`, aggregates, labels are the shipped pack's. A page is a firing
notification of one alert (alertname + labels) at the receiver; resolves are not pages,
but the traffic-stop scenario checks what its resolve says.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.rules.loader import load_rule_set
from tests.e2e.lab import LITELLM_CONFIG, Lab, LabOptions, wait_until
from tests.e2e.litellm_venv import ensure_litellm_venv, installed_version
from tests.e2e.receiver import WebhookReceiver
from tests.e2e.traffic import Driver

SCALE = 5.0  # every duration of the pack (and of the scenarios) divided by this
LEAD = 90.0 / SCALE  # the sidecar is up this long before the proxy starts
RESTART = 20.0 / SCALE  # the proxy does not answer this long
SLOW_SECONDS = 32.0  # the slow deployment's latency: over the pack's 30 s p95 threshold (not scaled)
SLOW_WORKERS = 24
STORM_WORKERS = 4
FAIL_WORKERS = 3
BUDGET_GROUP = "bedrock-lab"  # gatewatch's ModelGroupDailySpend gets a tiny limit for this group only
LOCATING = ("model_group", "deployment", "aws_account", "aws_region", "api_provider", "endpoint", "event",
            "threshold")
HERE = Path(__file__).resolve().parent


def scaled_values() -> dict[str, Any]:
    """A values file: the shipped pack with every duration divided by SCALE (thresholds untouched)."""
    rules: dict[str, Any] = {}
    groups: dict[str, Any] = {}
    for group in load_rule_set(None).groups:
        groups[group.name] = {"interval": f"{group.interval / SCALE:g}s"}
        for rule in group.rules:
            if rule.budget is not None:
                continue  # calendar periods: nothing to scale
            values = {"over": f"{rule.over / SCALE:g}s"}
            if rule.for_:
                values["for"] = f"{rule.for_ / SCALE:g}s"
            if rule.keep_firing_for:
                values["keep_firing_for"] = f"{rule.keep_firing_for / SCALE:g}s"
            rules[rule.alert] = values
    rules["ModelGroupDailySpend"] = {"budget": {"limits": {BUDGET_GROUP: 0.000001}}}
    return {"groups": groups, "rules": rules}


def proxy_config() -> dict[str, Any]:
    """The e2e proxy config, with what the scenarios need: slow calls may take SLOW_SECONDS (timeouts
    60 s), the failing deployment in an account/region of its own (so it cannot blur the slow
    one's region), and budget webhooks to gatewatch (`alerting: ["webhook"]`)."""
    config = yaml.safe_load(LITELLM_CONFIG.read_text())
    for entry in config["model_list"]:
        if entry["model_info"]["id"] == "error-nofallback-acct777-use2":
            entry["model_info"].update(id="error-nofallback-acct666-apne1", account_id="666666666666",
                                       region="ap-northeast-1")
            entry["litellm_params"]["tags"] = ["aws_account:666666666666", "aws_region:ap-northeast-1"]
    config["router_settings"]["timeout"] = 60
    config["litellm_settings"]["request_timeout"] = 60
    config.setdefault("general_settings", {})["alerting"] = ["webhook"]
    return config


@dataclass
class Expected:
    alertname: str
    labels: dict[str, str]
    why: str = ""

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        return name == self.alertname and all(labels.get(k) == v for k, v in self.labels.items())


@dataclass
class Scenario:
    name: str
    expected: list[Expected] = field(default_factory=list)
    quiet: str = ""  # what must not page, in words (the window is the scenario's own)
    start: float = 0.0
    end: float = 0.0
    notes: list[str] = field(default_factory=list)
    ok: bool = True


@dataclass
class Page:
    alertname: str
    labels: dict[str, str]
    at: float
    resolved_at: float | None = None
    resolve: dict[str, Any] | None = None  # the resolved alert as the webhook said it
    scenario: str = ""

    def where(self) -> str:
        return ", ".join(f"{k}={self.labels[k]}" for k in LOCATING if k in self.labels)


class OncallLab(Lab):
    """The e2e lab with the scenario's proxy config, the slow upstream, and the proxy started late."""

    def __init__(self, workdir: Path, receiver: WebhookReceiver) -> None:
        values = workdir / "scaled_values.yml"
        workdir.mkdir(parents=True, exist_ok=True)
        values.write_text(yaml.safe_dump(scaled_values(), sort_keys=False))
        extra = {
            "litellm": {"start_grace": f"{300 / SCALE:g}s", "request_timeout": "2s", "health_interval": "1s"},
            "rule_engine": {"values": [str(values)]},
            "notify": {
                "receivers": [{"name": "oncall", "webhook": {"url": receiver.url}}],
                "route": {"receiver": "oncall", "group_by": ["..."], "group_wait": "0s", "group_interval": "1s",
                          "repeat_interval": "1h"},
            },
        }
        super().__init__(workdir, LabOptions(merge_window="5s", gatewatch_extra=extra))
        self.gatewatch_started = 0.0
        self.proxy_launched = 0.0
        self.proxy_ready = 0.0

    def _start_upstream(self) -> None:
        ports = ",".join(str(self.ports[n]) for n in "ABCDE")
        process = self._spawn("upstream", [sys.executable, str(HERE / "fake_upstream.py"), "--ports", ports,
                                           "--slow-seconds", str(SLOW_SECONDS),
                                           "--log", str(self.workdir / "upstream_requests.jsonl")], self._base_env())
        for name in "ABCDE":
            process.wait_http(self.upstream_url(name) + "/_health", timeout=30)

    def _start_gatewatch(self) -> None:
        super()._start_gatewatch()
        self.litellm_config.write_text(yaml.safe_dump(proxy_config(), sort_keys=False))  # gatewatch reads it too
        self.gatewatch_started = time.time()

    def gatewatch_config_data(self) -> dict[str, Any]:
        data = super().gatewatch_config_data()
        self.litellm_config.write_text(yaml.safe_dump(proxy_config(), sort_keys=False))
        return data

    def proxy_env(self) -> dict[str, str]:
        env = super().proxy_env()
        env["WEBHOOK_URL"] = f"{self.gatewatch_url}/v1/litellm/alerts?token={self.gatewatch_token}"
        return env

    def start_late(self) -> None:
        """Upstream and gatewatch, then the proxy LEAD seconds later (as the README's dependsOn does)."""
        venv = ensure_litellm_venv(log=lambda msg: print(msg, file=sys.stderr, flush=True))
        self.litellm_version = installed_version(venv)
        self._start_upstream()
        self._start_gatewatch()
        time.sleep(LEAD)  # the scenario itself: the sidecar alone for LEAD seconds
        self.proxy_launched = time.time()
        self._start_proxy(venv)
        self.proxy_ready = time.time()

    def proxy_process(self):
        return next(p for p in self.processes if p.name == "proxy")


def chat(driver: Driver, model: str, mode: str = "") -> int:
    """One call; `mode` goes to the fake upstream in the prompt (`#mode=429`). Returns the HTTP status."""
    content = "hello from the on-call scenarios" + (f" #mode={mode}" if mode else "")
    try:
        driver.client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}])
        return 200
    except Exception as exc:  # the status is what matters; the SDK raises for every non-2xx
        return int(getattr(exc, "status_code", 0) or 0)


def steady(driver: Driver, model: str, seconds: float, every: float, stop: threading.Event | None = None,
           statuses: list[int] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        status = chat(driver, model)
        if statuses is not None:
            statuses.append(status)
        time.sleep(every)


class OncallRun:
    """Drives the scenarios in the lab and scores what the receiver got."""

    def __init__(self, lab: OncallLab, receiver: WebhookReceiver) -> None:
        self.lab = lab
        self.receiver = receiver
        self.driver = Driver(lab.proxy_url, lab.master_key, timeout=90)
        self.scenarios: dict[str, Scenario] = {}
        self.errors: list[str] = []

    def scenario(self, name: str, expected: list[Expected], quiet: str = "") -> Scenario:
        found = self.scenarios[name] = Scenario(name, expected, quiet)
        return found

    def timed(self, scenario: Scenario, body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            scenario.start = time.time()
            try:
                body()
            except Exception as exc:  # reported in the table and failed by the test
                self.errors.append(f"{scenario.name}: {type(exc).__name__}: {exc}")
            finally:
                scenario.end = time.time()
        return run

    # -- the scenarios ------------------------------------------------------------------------
    def run(self) -> None:
        lab = self.lab
        startup = self.scenario("sidecar up 90 s before the proxy", [], "ProxyDown")
        startup.start = lab.gatewatch_started
        startup.end = lab.proxy_ready + 30.0 / SCALE * 4
        # LiteLLM's own boot is real time, not scaled: it eats into the scaled grace
        startup.notes.append(f"proxy launched at {lab.proxy_launched - lab.gatewatch_started:.0f}s, answered "
                             f"at {lab.proxy_ready - lab.gatewatch_started:.0f}s; grace {300 / SCALE:g}s")
        self.traffic()
        self.restart()
        self.gone()

    def traffic(self) -> None:
        lab, driver = self.lab, self.driver
        stop_429 = threading.Event()
        one_429 = self.scenario("one 429 in healthy traffic", [], "any page on gpt-lab")
        storm = self.scenario("sustained 429 storm on one account/region", [
            Expected("AccountRegionThrottled", {"api_provider": "openai", "aws_account": "888888888888",
                                                "aws_region": "eu-north-1"}, "the account/region is throttled"),
            Expected("DeploymentErrorRatioHigh", {"deployment": "ratelimited-acct888-eun1"}, "every call fails"),
            Expected("DeploymentConsecutiveFailures", {"deployment": "ratelimited-acct888-eun1"},
                     "no success at all"),
            Expected("RemainingRequestsLow", {"deployment": "ratelimited-acct888-eun1"},
                     "fresh 0-remaining readings, reset 20 s, renewed by every 429"),
            Expected("RemainingTokensLow", {"deployment": "ratelimited-acct888-eun1"}, "same, for tokens"),
        ])
        failing = self.scenario("one deployment failing", [
            Expected("DeploymentErrorRatioHigh", {"deployment": "error-nofallback-acct666-apne1"}, "every call 500s"),
            Expected("DeploymentConsecutiveFailures", {"deployment": "error-nofallback-acct666-apne1"},
                     "no success at all"),
        ])
        stopped = self.scenario("traffic stops while an alert fires", [],
                                "a resolve that reads as fixed: it must say no data")
        cooldown = self.scenario("every deployment of a group in cooldown", [
            Expected("ModelGroupAllDeploymentsCooledDown", {"model_group": "gpt-lab"}, "clients refused"),
            Expected("DeploymentCooledDown", {"deployment": "gpt-lab-acct111-use1"}, "cooled down"),
            Expected("DeploymentCooledDown", {"deployment": "gpt-lab-acct222-euw1"}, "cooled down"),
            Expected("DeploymentCooledDown", {"deployment": "gpt-lab-acct333-usw2"}, "cooled down"),
        ])
        slow = self.scenario("slow deployment", [
            Expected("DeploymentSlowP95", {"deployment": "slow-model-acct777-use2"}, "p95 32 s > 30 s"),
            Expected("DeploymentTokensPerSecondCollapse", {"deployment": "slow-model-acct777-use2"},
                     "a few tokens in 32 s: p50 under 10 tokens/s"),
            # the slow deployment is the only one in 777777777777/us-east-2: the region is slow too
            # (its rules need 50 calls in their longer window, held for their longer `for`)
            Expected("RegionSlowP95", {"aws_account": "777777777777", "aws_region": "us-east-2"},
                     "the region's only deployment is slow"),
            Expected("RegionTokensPerSecondCollapse", {"aws_account": "777777777777", "aws_region": "us-east-2"},
                     "the region's only deployment is slow"),
        ])
        webhook = self.scenario("LiteLLM's budget webhook", [
            Expected("LiteLLMBudgetAlert", {"event": "budget_crossed", "event_group": "key"},
                     "the proxy's own WebhookEvent"),
        ])
        budget = self.scenario("gatewatch budget thresholds crossed", [
            Expected("ModelGroupDailySpend", {"model_group": BUDGET_GROUP, "threshold": "80%"}, "limit $0.000001"),
            Expected("ModelGroupDailySpend", {"model_group": BUDGET_GROUP, "threshold": "100%"}, "limit $0.000001"),
        ])

        def healthy_with_one_429() -> None:
            threading.Thread(target=steady, args=(driver, "gpt-lab", 60, 0.4, stop_429), daemon=True).start()
            time.sleep(10)
            status = chat(driver, "gpt-lab", "429")  # LiteLLM retries it on another deployment
            one_429.notes.append(f"the 429 call answered {status} to the client (retried)")
            time.sleep(50)
            stop_429.set()

        def storm_429() -> None:  # LiteLLM retries each call twice (retry-after 1 s): several callers
            calls: list[int] = []
            with_workers(STORM_WORKERS, lambda: steady(driver, "ratelimited-model", 120, 0.2, statuses=calls))
            storm.notes.append(f"{len(calls)} client calls, {calls.count(429)} answered 429")

        def failing_then_stop() -> None:  # LiteLLM retries each call twice: several callers
            with_workers(FAIL_WORKERS, lambda: steady(driver, "error-model-nofallback", 80, 0.2))
            stopped.start = time.time()  # no more calls: the alerts must resolve with a no-data note

        def all_cooled_down() -> None:
            stop_429.wait(120)  # after the healthy gpt-lab traffic of the one-429 scenario
            time.sleep(5)
            cooldown.start = time.time()
            for name in "ABC":  # 500s: the router cools each deployment down after allowed_fails
                lab.set_upstream_mode(name, "500")
            try:
                for _ in range(12):
                    chat(driver, "gpt-lab")
            finally:
                for name in "ABC":
                    lab.set_upstream_mode(name, None)
            wait_until(lambda: chat(driver, "gpt-lab") == 200 or time.sleep(1), timeout=60, what="gpt-lab back")

        def slow_calls() -> None:
            calls: list[int] = []
            started = time.monotonic()
            with_workers(SLOW_WORKERS, lambda: steady(driver, "slow-model", 170, 0.0, statuses=calls))
            slow.notes.append(f"{calls.count(200)} slow calls answered in {time.monotonic() - started:.0f} s")

        def budget_webhook() -> None:
            time.sleep(5)
            request = urllib.request.Request(lab.proxy_url + "/health/services?service=webhook",
                                             headers={"Authorization": f"Bearer {lab.master_key}"})
            with urllib.request.urlopen(request, timeout=60) as response:
                webhook.notes.append(f"GET /health/services?service=webhook: HTTP {response.status}")

        def budget_calls() -> None:
            for _ in range(3):
                chat(driver, BUDGET_GROUP)

        jobs = [(one_429, healthy_with_one_429), (storm, storm_429), (failing, failing_then_stop),
                (cooldown, all_cooled_down), (slow, slow_calls), (webhook, budget_webhook), (budget, budget_calls)]
        threads = [threading.Thread(target=self.timed(s, body), name=s.name) for s, body in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        # the stopped traffic's alerts resolve once their window (and keep_firing_for) has passed
        wait_until(lambda: self._resolved("error-nofallback-acct666-apne1"), timeout=120, interval=1,
                   what="the failing deployment's alerts to resolve after its traffic stopped")
        stopped.end = time.time()
        failing.end = max(failing.end, stopped.start)

    def _resolved(self, deployment: str) -> bool:
        pages = [p for p in self.pages() if p.labels.get("deployment") == deployment]
        return bool(pages) and all(p.resolve is not None for p in pages)

    def restart(self) -> None:
        scenario = self.scenario("a 20 s proxy restart", [], "ProxyDown")
        scenario.start = time.time()
        proxy = self.lab.proxy_process()
        os.killpg(proxy.pid, signal.SIGSTOP)  # answers nothing (polls time out after 2 s) ...
        try:
            time.sleep(RESTART)
        finally:
            os.killpg(proxy.pid, signal.SIGCONT)  # ... and is back
        time.sleep(60 / SCALE * 2)  # ProxyDown's `for` twice over: it must stay quiet
        scenario.end = time.time()

    def gone(self) -> None:
        scenario = self.scenario("the proxy gone for good", [
            Expected("ProxyDown", {"endpoint": "readiness"}, "this task's proxy does not answer"),
            Expected("ProxyDown", {"endpoint": "liveliness"}, "this task's proxy does not answer"),
        ])
        scenario.start = time.time()
        self.lab.proxy_process().stop(grace=5)
        wait_until(lambda: all(any(e.matches(p.alertname, p.labels) for p in self.pages())
                               for e in scenario.expected) or None, timeout=90, interval=1,
                   what="ProxyDown for both endpoints")
        time.sleep(3)
        scenario.end = time.time()

    # -- what the receiver got ------------------------------------------------------------------
    def pages(self) -> list[Page]:
        found: dict[tuple, Page] = {}
        for item in list(self.receiver.received):
            body = item.json()
            if not isinstance(body, dict):
                continue
            for alert in body.get("alerts") or []:
                labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
                key = tuple(sorted(labels.items()))
                page = found.get(key)
                if alert.get("status") == "firing" and page is None:
                    found[key] = Page(labels.get("alertname", ""), labels, item.time)
                elif alert.get("status") == "resolved" and page is not None and page.resolve is None:
                    page.resolved_at, page.resolve = item.time, alert
        return sorted(found.values(), key=lambda p: p.at)

    def score(self) -> dict[str, Any]:
        pages = self.pages()
        expected = [(s, e) for s in self.scenarios.values() for e in s.expected]
        right = 0
        for page in pages:
            owner = next((s for s, e in expected if e.matches(page.alertname, page.labels)), None)
            if owner is not None:
                page.scenario = owner.name
                right += 1
            else:  # in whose window did it fire?
                during = [s.name for s in self.scenarios.values() if s.start <= page.at <= s.end + 30]
                page.scenario = "UNEXPECTED during " + (", ".join(during) or "no scenario")
                for name in during:
                    self.scenarios[name].ok = False
        got = 0
        for scenario, exp in expected:
            if any(exp.matches(p.alertname, p.labels) for p in pages):
                got += 1
            else:
                scenario.ok = False
        stopped = self.scenarios.get("traffic stops while an alert fires")
        if stopped is not None:
            resolves = [p for p in pages if p.labels.get("deployment") == "error-nofallback-acct666-apne1"]
            for page in resolves:
                said = page.resolve or {}
                stopped.notes.append(f"{page.alertname} resolved noData={said.get('noData')} "
                                     f"value={said.get('valueText')!r}")
                if not said.get("noData"):
                    stopped.ok = False
            if not resolves:
                stopped.ok = False
        return {"pages": pages, "right": right, "received": len(pages), "expected": len(expected), "hit": got,
                "precision": right / len(pages) if pages else 1.0, "recall": got / len(expected) if expected else 1.0}

    def table(self, score: dict[str, Any]) -> str:
        t0 = self.lab.gatewatch_started
        lines = [f"LiteLLM {self.lab.litellm_version}; rule durations, group intervals and litellm.start_grace "
                 f"divided by {SCALE:g} (thresholds, min_events, aggregates and labels as shipped)", "",
                 "| scenario | window (s) | expected pages | received pages | ok |", "|---|---|---|---|---|"]
        pages: list[Page] = score["pages"]
        for s in self.scenarios.values():
            exp = "<br>".join(f"{e.alertname} {{{', '.join(f'{k}={v}' for k, v in e.labels.items())}}}"
                              for e in s.expected) or f"none ({s.quiet})"
            got = [p for p in pages if p.scenario == s.name or (p.scenario.startswith("UNEXPECTED")
                   and s.name in p.scenario)]
            rec = "<br>".join(f"{p.alertname} {{{p.where()}}} at {p.at - t0:.0f}s"
                              + (f", resolved at {p.resolved_at - t0:.0f}s" if p.resolved_at else "")
                              + (" **UNEXPECTED**" if p.scenario.startswith("UNEXPECTED") else "")
                              for p in got) or "none"
            if s.notes:
                rec += "<br>" + "<br>".join(s.notes)
            lines.append(f"| {s.name} | {s.start - t0:.0f}–{s.end - t0:.0f} | {exp} | {rec} | "
                         f"{'yes' if s.ok else '**NO**'} |")
        orphans = [p for p in pages if p.scenario.startswith("UNEXPECTED during no scenario")]
        for p in orphans:
            lines.append(f"| (none) | | | {p.alertname} {{{p.where()}}} at {p.at - t0:.0f}s **UNEXPECTED** | **NO** |")
        lines += ["", f"precision: {score['right']}/{score['received']} = {score['precision']:.0%} "
                      f"(right pages / all pages)",
                  f"recall: {score['hit']}/{score['expected']} = {score['recall']:.0%} (expected pages received)"]
        if self.errors:
            lines += ["", "errors: " + "; ".join(self.errors)]
        return "\n".join(lines)


def with_workers(n: int, body: Callable[[], None]) -> None:
    threads = [threading.Thread(target=body, daemon=True) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def save(run: OncallRun, text: str) -> None:
    (run.lab.workdir / "scenarios.md").write_text(text + "\n")
    (run.lab.workdir / "pages.json").write_text(json.dumps([p.__dict__ for p in run.pages()], indent=1, default=str))
