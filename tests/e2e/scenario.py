"""The traffic of one e2e run, phase by phase, and the scrapes taken once it has settled.

Phases (each one a thing the platform team wants to see, on a real proxy):
  steady     successes on a 3-deployment group (3 accounts/regions), streaming, slow calls,
             Bedrock in two accounts/regions (one through an assumed role)
  errors     upstream 500s, 429s with retry-after, Bedrock ThrottlingException, fallbacks
  retry      one deployment of gpt-lab returns 500: retries recover, the deployment is cooled down
  cooldown   every deployment of gpt-lab returns 429: all cooled down, "No deployments available"
  recover    faults cleared: calls succeed again once the cooldown ends
  refused    refused before routing: an unknown key, an unknown model, a deployment over budget
  alert_*    (when the rule engine and alert delivery exist) slow calls, a failing deployment and a
             429 storm until the default rules fire to a local webhook; then the fault is cleared
             and healthy traffic flows until they resolve
  health     GET /health: LiteLLM's own health-check calls (kept out of the request counts)

Calls whose order does not matter run concurrently to keep the suite short; the comparison
does not depend on routing luck because the client, LiteLLM and gatewatch witness the same
calls.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tests.e2e import alerting
from tests.e2e.lab import Lab, wait_until
from tests.e2e.litellm_venv import litellm_version
from tests.e2e.promtext import Scrape
from tests.e2e.receiver import WebhookReceiver
from tests.e2e.traffic import Call, Driver

NO_DEPLOYMENTS = "No deployments available"
CROSSED_BUDGET = "crossed budget"  # "No deployments available - crossed budget: ..." (a budget, not a cooldown)
HEALTH_CHECK = "litellm-internal-health-check"
BAD_KEY = "sk-not-a-key-of-this-proxy"
UNKNOWN_MODEL = "no-such-model"
GPT_LAB_DEPLOYMENTS = {"gpt-lab-acct111-use1", "gpt-lab-acct222-euw1", "gpt-lab-acct333-usw2"}


def all_in_cooldown(call: Call) -> bool:
    """Refused because every deployment of the group was cooling down."""
    return NO_DEPLOYMENTS in call.error_message and CROSSED_BUDGET not in call.error_message


def fallbacks_counted_under_the_group_asked_for() -> bool:
    """LiteLLM >= 1.110 counts a request rescued by a fallback in litellm_proxy_total_requests_metric
    under the group asked for (`original_model_group`); 1.108 (and gatewatch) under the group that
    served it. Its spend, tokens and latency stay under the group that served it in both."""
    version = tuple(int(part) for part in litellm_version().split(".")[:2] if part.isdigit())
    return version >= (1, 110)


def litellm_labels(call: Call) -> tuple[str, str]:
    """(requested_model, status_code) of a call as LiteLLM labels it, which gatewatch follows:
    a fallback counts under the group that served it, a model the proxy does not know is
    `other`, and a budget refusal (a ValueError, no HTTP status) is `None` though the client
    got a 429."""
    model = call.model_group if call.ok and call.fallbacks else call.model
    if call.scenario == "unknown_model":
        model = "other"
    status = "None" if CROSSED_BUDGET in call.error_message else str(call.status)
    return model, status


@dataclass
class Run:
    lab: Lab
    driver: Driver
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (start, end) epoch
    receiver: WebhookReceiver | None = None
    litellm: Scrape | None = None
    gatewatch: Scrape | None = None

    @property
    def calls(self) -> list[Call]:
        return self.driver.calls

    def scrape_litellm(self) -> Scrape:
        request = urllib.request.Request(self.lab.proxy_url + "/metrics/",
                                         headers={"Authorization": f"Bearer {self.lab.master_key}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return Scrape(response.read().decode())

    def cooled_down(self, model_id: str) -> float:
        """LiteLLM's own count of cooldowns of one deployment (its /metrics/)."""
        return self.scrape_litellm().value("litellm_deployment_cooled_down_total", {"model_id": model_id})

    def health_check(self) -> dict:
        """GET /health: LiteLLM calls every deployment once, as `litellm-internal-health-check`."""
        request = urllib.request.Request(self.lab.proxy_url + "/health",
                                         headers={"Authorization": f"Bearer {self.lab.master_key}"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def scrape_gatewatch(self) -> Scrape:
        with urllib.request.urlopen(self.lab.gatewatch_url + "/metrics", timeout=30) as response:
            return Scrape(response.read().decode())


def not_health_check(labels) -> bool:
    return HEALTH_CHECK not in (labels.get("hashed_api_key"), labels.get("api_key_alias"))


def _parallel(driver: Driver, jobs: list[tuple[str, str, bool]], workers: int = 8) -> list[Call]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(driver.chat, scenario, model, stream) for scenario, model, stream in jobs]
        return [f.result() for f in futures]


def drive(lab: Lab, merge_window: float, receiver: WebhookReceiver | None = None) -> Run:
    driver = Driver(lab.proxy_url, lab.master_key)
    run = Run(lab, driver, receiver=receiver)

    def phase(name: str, body) -> None:
        start = time.time()
        body()
        run.phases[name] = (start, time.time())
        lab.check_alive()

    def steady() -> None:
        # routing is random: go on (bounded) until each of gpt-lab's deployments served a call,
        # so every deployment has its remaining-requests/tokens gauges to compare
        served: set[str] = set()
        for count in range(40):
            served.add(driver.chat("steady", "gpt-lab").deployment)
            if count >= 8 and GPT_LAB_DEPLOYMENTS <= served:
                break
        for _ in range(3):
            driver.chat("stream", "gpt-lab", stream=True)
        _parallel(driver, [("slow", "slow-model", False)] * 2  # fewer than the slow alert's min_events
                  + [("bedrock", "bedrock-lab", False), ("bedrock", "bedrock-lab-role", False)] * 2)

    def errors() -> None:
        _parallel(driver, [("upstream_500", "error-model-nofallback", False)] * 2
                  + [("upstream_429", "ratelimited-model", False)] * 2
                  + [("bedrock_throttled", "bedrock-throttled", False)]
                  + [("fallback", "error-model", False)] * 2)

    def retry() -> None:
        # routing is random: call until a call was rescued by a retry and A was cooled down
        lab.set_upstream_mode("A", "500")
        try:
            for _ in range(40):
                driver.chat("retry", "gpt-lab")
                rescued = any(c.ok and c.retries for c in driver.calls if c.scenario == "retry")
                if rescued and run.cooled_down("gpt-lab-acct111-use1") >= 1:
                    break
        finally:
            lab.set_upstream_mode("A", None)

    def cooldown() -> None:
        for name in "ABC":
            lab.set_upstream_mode(name, "429:4")  # 429 with retry-after: 4 s
        try:
            for _ in range(12):
                call = driver.chat("cooldown", "gpt-lab")
                if NO_DEPLOYMENTS in call.error_message:
                    driver.chat("cooldown", "gpt-lab")  # a second refusal while all are cooling down
                    break
        finally:
            for name in "ABC":
                lab.set_upstream_mode(name, None)

    def recover() -> None:
        wait_until(lambda: driver.chat("recover", "gpt-lab").ok or time.sleep(1), timeout=60,
                   what="gpt-lab to answer again after the cooldown")
        for _ in range(3):
            driver.chat("recover", "gpt-lab")

    phase("steady", steady)
    phase("errors", errors)
    phase("retry", retry)
    phase("cooldown", cooldown)
    phase("recover", recover)
    phase("refused", lambda: refused(driver))
    if receiver is not None and alerting.available():
        phase("alert_fault", lambda: alert_fault(run))
        phase("alert_heal", lambda: alert_heal(run))
    phase("health", lambda: run.health_check())
    settle(run, merge_window)
    save(run)
    return run


def refused(driver: Driver) -> None:
    """Requests the proxy refuses before routing: a key it does not know, a model it does not
    serve, a deployment over its budget."""
    driver.chat("bad_key", "gpt-lab", api_key=BAD_KEY)
    driver.chat("unknown_model", UNKNOWN_MODEL)
    for _ in range(8):
        if CROSSED_BUDGET in driver.chat("budget", "budget-model").error_message:
            break


def save(run: Run) -> None:
    """Keep what every witness said next to the process logs, for a failing test to point at."""
    workdir = run.lab.workdir
    with open(workdir / "client_calls.jsonl", "w") as out:
        for call in run.calls:
            out.write(json.dumps(dataclasses.asdict(call)) + "\n")
    if run.litellm is not None:
        (workdir / "litellm_metrics.txt").write_text(run.litellm.text)
    if run.gatewatch is not None:
        (workdir / "gatewatch_metrics.txt").write_text(run.gatewatch.text)
    (workdir / "phases.json").write_text(json.dumps(run.phases, indent=1))


def _alert_times(run: Run, status: str, since: float) -> dict[str, float | None]:
    assert run.receiver is not None
    return {name: alerting.first_seen(run.receiver.received, name, labels, status, since)
            for name, labels in alerting.EXPECTED_ALERTS.items()}


def alert_fault(run: Run) -> None:
    """A sustained fault: slow calls, a deployment that always fails and a 429 storm, in rounds,
    until the default rules have fired (or a minute has passed: test_e2e_alerts says which not)."""
    start = time.time()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _parallel(run.driver, [("alert_slow", "slow-model", False)] * 4
                  + [("alert_failing", "error-model-nofallback", False)] * 4
                  + [("alert_429", "ratelimited-model", False)] * 4, workers=12)
        if all(_alert_times(run, "firing", start).values()):
            return


def alert_heal(run: Run) -> None:
    """Clear the fault (port D answers ok for every model) and keep healthy traffic flowing until
    every alert has resolved."""
    lab, driver = run.lab, run.driver
    start = time.time()
    lab.set_upstream_mode("D", "ok")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all(_alert_times(run, "resolved", start).values()):
            _parallel(driver, [("alert_heal", "slow-model", False), ("alert_heal", "error-model-nofallback", False),
                               ("alert_heal", "ratelimited-model", False)])
            time.sleep(1.0)
    finally:
        lab.set_upstream_mode("D", None)


def settle(run: Run, merge_window: float) -> None:
    """Wait until both witnesses have counted every call and no failure is held for merging."""
    expected = len(run.calls)
    time.sleep(merge_window)  # the last failure must age out of gatewatch's merge window

    def settled() -> bool:
        litellm, gatewatch = run.scrape_litellm(), run.scrape_gatewatch()
        seen_litellm = litellm.value("litellm_proxy_total_requests_metric_total", not_health_check)
        seen_gatewatch = gatewatch.value("litellm_proxy_total_requests_metric_total", not_health_check)
        pending = gatewatch.value("gatewatch_pending_failed_requests")
        run.litellm, run.gatewatch = litellm, gatewatch
        return seen_litellm >= expected and seen_gatewatch >= expected and pending == 0

    try:
        wait_until(settled, timeout=merge_window + 60, interval=1.0, what="both witnesses to count every call")
    except TimeoutError:
        return  # the count tests report the numbers; a hang here must not hide them
    # a late or duplicated callback batch would still show up: scrape once more, a few flushes later
    time.sleep(3 * run.lab.options.flush_interval)
    run.litellm, run.gatewatch = run.scrape_litellm(), run.scrape_gatewatch()
