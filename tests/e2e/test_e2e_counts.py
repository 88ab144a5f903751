"""gatewatch's numbers agree with the real LiteLLM proxy's own /metrics and with the client.

Three witnesses of the same run: the openai SDK client (what it sent and got back),
LiteLLM's own `prometheus` callback (/metrics/), and gatewatch (/metrics, fed by the
generic_api callback). Every comparison prints a table with all three numbers per row
when any of them differs.

The client's calls are put under LiteLLM's labels (scenario.litellm_labels), which gatewatch
follows: a request rescued by a fallback counts under the group that served it, an unknown
model is `other`, a budget refusal has status `None`.

Known, intended differences are not papered over but computed from LiteLLM's own numbers:
  * LiteLLM labels a failed request with the deployment of its *last* attempt; its
    callbacks only ever carry the *first* failed attempt (see the fixtures README), so
    per-deployment failure attribution of requests is compared per model group only.
  * Router refusals ("No deployments available") have no deployment: LiteLLM counts them
    in litellm_deployment_* with model_id=""; gatewatch keeps them out of deployment
    series (they are in the request counts and gatewatch_no_deployments_available).
  * LiteLLM's API latency / TTFT start at `api_call_start_time` and its total latency adds
    the queue time; the payload has neither, so only counts per deployment are compared
    exactly (see test_latency_values for what is checked of the values).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.promtext import diff, drop_zero, norm, table
from tests.e2e.scenario import (
    NO_DEPLOYMENTS,
    Run,
    all_in_cooldown,
    fallbacks_counted_under_the_group_asked_for,
    litellm_labels,
    not_health_check,
)
from tests.e2e.traffic import upstream_attempts

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIG = Path(__file__).resolve().parent / "litellm_config.yaml"


def deployments() -> dict[str, dict[str, Any]]:
    """model_info.id -> {group, account, region, input_cost, output_cost, rpm, tpm} from the proxy config."""
    data = yaml.safe_load(CONFIG.read_text())
    out = {}
    for entry in data["model_list"]:
        info, params = entry["model_info"], entry["litellm_params"]
        out[info["id"]] = {
            "group": entry["model_name"],
            "account": str(info["account_id"]),
            "region": info["region"],
            "input_cost": float(info.get("input_cost_per_token") or 0.0),
            "output_cost": float(info.get("output_cost_per_token") or 0.0),
            "rpm": params.get("rpm"),
            "tpm": params.get("tpm"),
        }
    return out


def check(title: str, columns: tuple[str, ...], rel_tol: float = 0.0, **witnesses: dict) -> None:
    witnesses = {name: drop_zero(counts) for name, counts in witnesses.items()}
    rows = diff(witnesses, rel_tol=rel_tol)
    assert not rows, table(f"{title}: the witnesses disagree", witnesses, columns)


def logs_hint(run: Run) -> str:
    return f"(process logs in {run.lab.workdir})"


def litellm_requests(run: Run, by: tuple[str, ...], failed: bool = False) -> dict[tuple, float]:
    name = "litellm_proxy_failed_requests_metric_total" if failed else "litellm_proxy_total_requests_metric_total"
    return run.litellm.total(name, by, not_health_check)


def gatewatch_requests(run: Run, by: tuple[str, ...], failed: bool = False) -> dict[tuple, float]:
    name = "litellm_proxy_failed_requests_metric_total" if failed else "litellm_proxy_total_requests_metric_total"
    return run.gatewatch.total(name, by)


def client_as_litellm(calls) -> dict[tuple, float]:
    """The client's calls per (requested_model, status) as LiteLLM labels them, folded like the scrapes."""
    return {k: float(v) for k, v in Counter(tuple(map(norm, litellm_labels(c))) for c in calls).items()}


# -- the run did what it says ----------------------------------------------------------------
def test_every_scenario_happened(e2e_run: Run) -> None:
    calls = e2e_run.calls
    by_scenario: dict[str, list] = {}
    for call in calls:
        by_scenario.setdefault(call.scenario, []).append(call)
    summary = {s: Counter(c.status for c in cs) for s, cs in by_scenario.items()}
    assert all(c.ok for c in by_scenario["steady"]), summary
    assert all(c.ok and c.total_tokens > 0 for c in by_scenario["stream"]), summary
    assert all(c.ok and c.elapsed >= 2.0 for c in by_scenario["slow"]), summary
    assert {c.deployment for c in by_scenario["bedrock"] if c.ok} == {"bedrock-acct444-euc1",
                                                                      "bedrock-acct555-apse2"}, summary
    assert {c.status for c in by_scenario["upstream_500"]} == {500}, summary
    assert {c.status for c in by_scenario["upstream_429"]} == {429}, summary
    assert {c.status for c in by_scenario["bedrock_throttled"]} == {429}, summary
    fallbacks = by_scenario["fallback"]
    assert all(c.ok and c.fallbacks >= 1 and c.model_group == "gpt-lab" for c in fallbacks), \
        [(c.status, c.model_group, c.fallbacks) for c in fallbacks]
    assert any(c.ok and c.retries >= 1 for c in by_scenario["retry"]), "no call of the retry phase was rescued"
    assert any(NO_DEPLOYMENTS in c.error_message for c in by_scenario["cooldown"]), \
        [c.error_message[:120] for c in by_scenario["cooldown"]]
    assert by_scenario["recover"][-1].ok, summary
    assert [c.status for c in by_scenario["bad_key"]] in ([400], [401]), summary  # 400 "No connected db." without a DB
    assert [c.status for c in by_scenario["unknown_model"]] == [400], summary
    assert by_scenario["budget"][-1].status == 429 and "crossed budget" in by_scenario["budget"][-1].error_message, \
        [(c.status, c.error_message[:80]) for c in by_scenario["budget"]]
    cooled = e2e_run.litellm.total("litellm_deployment_cooled_down_total", ("model_id",))
    assert cooled.get(("gpt-lab-acct111-use1",), 0) >= 1, f"LiteLLM never cooled down the failing deployment: {cooled}"


# -- request level ---------------------------------------------------------------------------
def test_request_counts_per_model_group_and_status(e2e_run: Run) -> None:
    by = ("requested_model", "status_code")
    client = client_as_litellm(e2e_run.calls)
    assert any(c.fallbacks for c in e2e_run.calls if c.ok)
    litellm = dict(litellm_requests(e2e_run, by))
    if fallbacks_counted_under_the_group_asked_for():  # a difference between LiteLLM versions (README)
        for (asked, fallback), n in e2e_run.litellm.total("litellm_deployment_successful_fallbacks_total",
                                                          ("requested_model", "fallback_model")).items():
            litellm[(asked, "200")] = litellm.get((asked, "200"), 0.0) - n
            litellm[(fallback, "200")] = litellm.get((fallback, "200"), 0.0) + n
    check("requests per model group and status", by, client=client, litellm=litellm,
          gatewatch=gatewatch_requests(e2e_run, by))
    assert sum(client.values()) == len(e2e_run.calls)


def test_successful_requests_per_deployment(e2e_run: Run) -> None:
    by = ("model_id",)
    client = {k: float(v) for k, v in Counter((c.deployment,) for c in e2e_run.calls if c.ok).items()}
    ok = {"status_code": "200"}
    check("successful requests per deployment", by, client=client,
          litellm=e2e_run.litellm.total("litellm_proxy_total_requests_metric_total", by,
                                        lambda labels: not_health_check(labels) and labels["status_code"] == "200"),
          gatewatch=e2e_run.gatewatch.total("litellm_proxy_total_requests_metric_total", by, ok))


def test_failed_requests_per_model_group(e2e_run: Run) -> None:
    by = ("requested_model", "exception_status")
    client = client_as_litellm([c for c in e2e_run.calls if not c.ok])
    check("failed requests per model group and status", by, client=client,
          litellm=litellm_requests(e2e_run, by, failed=True), gatewatch=gatewatch_requests(e2e_run, by, failed=True))
    by_class = ("requested_model", "exception_status", "exception_class")
    check("failed requests per model group, status and exception class", by_class,
          litellm=litellm_requests(e2e_run, by_class, failed=True),
          gatewatch=gatewatch_requests(e2e_run, by_class, failed=True))


def test_no_deployments_refusals(e2e_run: Run) -> None:
    refused = sum(1 for c in e2e_run.calls if all_in_cooldown(c))
    where = {"exception_class": "RouterRateLimitError"}
    litellm = e2e_run.litellm.value("litellm_proxy_failed_requests_metric_total", where)
    gatewatch = e2e_run.gatewatch.value("litellm_proxy_failed_requests_metric_total", where)
    litellm_router = e2e_run.litellm.value("litellm_deployment_failure_responses_total",
                                           {"exception_class": "RouterRateLimitError", "model_id": ""})
    assert refused >= 1
    assert refused == litellm == gatewatch == litellm_router, (
        f"'No deployments available' refusals: client={refused} litellm={litellm:g} "
        f"litellm(deployment model_id='')={litellm_router:g} gatewatch={gatewatch:g}")


# -- deployment level ------------------------------------------------------------------------
@pytest.mark.parametrize("metric, extra", [
    ("litellm_deployment_total_requests_total", ()),
    ("litellm_deployment_success_responses_total", ()),
    ("litellm_deployment_failure_responses_total", ("exception_status", "exception_class")),
])
def test_deployment_counts(e2e_run: Run, metric: str, extra: tuple[str, ...]) -> None:
    by = ("model_group", "model_id", *extra)

    def real_deployment(labels) -> bool:
        return not_health_check(labels) and norm(labels.get("model_id", "")) != ""

    check(metric, by, litellm=e2e_run.litellm.total(metric, by, real_deployment),
          gatewatch=e2e_run.gatewatch.total(metric, by, real_deployment))


def test_successful_fallbacks(e2e_run: Run) -> None:
    by = ("requested_model", "fallback_model")
    client = Counter((c.model, c.model_group) for c in e2e_run.calls if c.ok and c.fallbacks)
    check("litellm_deployment_successful_fallbacks", by, client={k: float(v) for k, v in client.items()},
          litellm=e2e_run.litellm.total("litellm_deployment_successful_fallbacks_total", by),
          gatewatch=e2e_run.gatewatch.total("litellm_deployment_successful_fallbacks_total", by))


def test_retries_reported_to_the_client(e2e_run: Run) -> None:
    client = sum(c.retries for c in e2e_run.calls if c.ok)
    gatewatch = e2e_run.gatewatch.value("gatewatch_deployment_retries_total", {"source": "callback"})
    assert client >= 1
    assert gatewatch == client, f"retries: client (x-litellm-attempted-retries)={client} gatewatch={gatewatch:g}"


# -- tokens, spend, latency ------------------------------------------------------------------
@pytest.mark.parametrize("metric, attr", [
    ("litellm_input_tokens_metric_total", "input_tokens"),
    ("litellm_output_tokens_metric_total", "output_tokens"),
    ("litellm_total_tokens_metric_total", "total_tokens"),
])
def test_tokens_per_deployment(e2e_run: Run, metric: str, attr: str) -> None:
    by = ("model_id",)
    client = e2e_run.driver.sum_by(attr, "deployment")
    assert sum(client.values()) > 0
    check(metric, by, client=client, litellm=e2e_run.litellm.total(metric, by, not_health_check),
          gatewatch=e2e_run.gatewatch.total(metric, by))


def test_spend_per_deployment(e2e_run: Run) -> None:
    """Spend = the client's usage x the prices in the proxy config; LiteLLM and gatewatch must agree."""
    prices = deployments()
    client: dict[tuple, float] = {}
    for call in e2e_run.calls:
        if call.ok:
            price = prices[call.deployment]
            cost = call.input_tokens * price["input_cost"] + call.output_tokens * price["output_cost"]
            client[(call.deployment,)] = client.get((call.deployment,), 0.0) + cost
            if not call.stream:  # LiteLLM's own x-litellm-response-cost says the same (not sent on streams)
                assert call.cost == pytest.approx(cost, rel=1e-9), (call.deployment, call.cost, cost)
    priced = {(d,) for d, p in prices.items() if p["input_cost"] or p["output_cost"]}
    assert all(v > 0 for k, v in client.items() if k in priced), client
    by = ("model_id",)
    check("litellm_spend_metric (USD)", by, rel_tol=1e-9, client=client,
          litellm=e2e_run.litellm.total("litellm_spend_metric_total", by, not_health_check),
          gatewatch=e2e_run.gatewatch.total("litellm_spend_metric_total", by))


@pytest.mark.parametrize("metric", [
    "litellm_llm_api_latency_metric",
    "litellm_request_total_latency_metric",
    "litellm_llm_api_time_to_first_token_metric",
    "litellm_overhead_latency_metric",
])
def test_latency_histogram_counts(e2e_run: Run, metric: str) -> None:
    by = ("model_id",)
    check(f"{metric}_count", by, litellm=e2e_run.litellm.total(f"{metric}_count", by, not_health_check),
          gatewatch=e2e_run.gatewatch.total(f"{metric}_count", by))


def test_latency_values(e2e_run: Run) -> None:
    """Overhead is the payload's own number: equal. API and total latency: LiteLLM measures them
    from `api_call_start_time` and adds the queue time, neither of which the callback payload
    carries; gatewatch measures both from the payload's startTime to endTime. So gatewatch's API
    latency is never below LiteLLM's and its total latency never above it; the slow calls are
    slow in both."""
    by = ("model_id",)
    check("litellm_overhead_latency_metric_sum (s)", by, rel_tol=1e-6,
          litellm=e2e_run.litellm.total("litellm_overhead_latency_metric_sum", by, not_health_check),
          gatewatch=e2e_run.gatewatch.total("litellm_overhead_latency_metric_sum", by))
    ll_api = e2e_run.litellm.total("litellm_llm_api_latency_metric_sum", by, not_health_check)
    ll_total = e2e_run.litellm.total("litellm_request_total_latency_metric_sum", by, not_health_check)
    gw_api = e2e_run.gatewatch.total("litellm_llm_api_latency_metric_sum", by)
    gw_total = e2e_run.gatewatch.total("litellm_request_total_latency_metric_sum", by)
    slack = 1e-6
    wrong = [f"{k}: api litellm={ll_api.get(k, 0):.4f} gatewatch={gw_api.get(k, 0):.4f}, "
             f"total litellm={ll_total.get(k, 0):.4f} gatewatch={gw_total.get(k, 0):.4f}"
             for k in sorted(set(ll_api) | set(gw_api))
             if not (gw_api.get(k, 0) + slack >= ll_api.get(k, 0) and gw_total.get(k, 0) <= ll_total.get(k, 0) + slack)]
    assert not wrong, "\n".join(wrong)

    # observations above 1 s on the slow deployment = calls the client saw take 2 s or more
    slow = {"model_id": "slow-model-acct777-use2"}
    client = sum(1 for c in e2e_run.calls if c.ok and c.deployment == slow["model_id"] and c.elapsed >= 2.0)
    metric = "litellm_llm_api_latency_metric"

    def above_1s(scrape) -> float:
        return scrape.value(f"{metric}_count", slow) - scrape.value(f"{metric}_bucket", {**slow, "le": "1.0"})

    assert client >= 2
    assert above_1s(e2e_run.gatewatch) == above_1s(e2e_run.litellm) == client, (
        f"slow-model calls over 1 s: client={client} litellm={above_1s(e2e_run.litellm):g} "
        f"gatewatch={above_1s(e2e_run.gatewatch):g}")


# -- from the proxy's JSON logs (cooldowns, refusals, retries of failed requests) -----------
def _require_log_tail() -> None:
    pytest.importorskip("agent.parse.logs", reason="the proxy log tailer (issue 3) is not in this checkout")


def test_cooldowns_counted_from_the_logs(e2e_run: Run) -> None:
    _require_log_tail()
    by = ("model_id", "exception_status")
    litellm = e2e_run.litellm.total("litellm_deployment_cooled_down_total", by)
    assert sum(litellm.values()) >= 3  # retry phase: A; cooldown phase: every gpt-lab deployment
    check("litellm_deployment_cooled_down", by, litellm=litellm,
          gatewatch=e2e_run.gatewatch.total("litellm_deployment_cooled_down_total", by))


def test_no_deployments_refusals_counted_once(e2e_run: Run) -> None:
    """Refusals that reached the client, counted once although both the callback and the
    proxy log report each of them. (A refusal that a fallback rescued is not in any callback:
    LiteLLM reports only the first failed attempt of a request, and it counts such a request
    in litellm_deployment_successful_fallbacks{exception_class="RouterRateLimitError"}.)"""
    _require_log_tail()
    by = ("model_group",)
    client = Counter((c.model,) for c in e2e_run.calls if all_in_cooldown(c))
    check("gatewatch_no_deployments_available", by, client={k: float(v) for k, v in client.items()},
          gatewatch=e2e_run.gatewatch.total("gatewatch_no_deployments_available_total", by))


def test_retries_match_the_attempts_the_upstream_served(e2e_run: Run) -> None:
    """Retries per model group, from the callbacks (rescued requests) and the logs (failed ones),
    against the attempts the fake upstream actually served for each call. Calls rescued by a
    fallback are left out: retries LiteLLM made before falling back appear neither in the
    success's x-litellm-attempted-retries nor in a final-failure log line."""
    _require_log_tail()
    attempts = upstream_attempts(e2e_run.lab.workdir / "upstream_requests.jsonl")
    truth: Counter[tuple[str]] = Counter()
    for call in e2e_run.calls:
        if not call.fallbacks:
            truth[(call.model,)] += max(attempts.get(call.seq, 0) - 1, 0)
    assert sum(truth.values()) >= 4
    check("gatewatch_deployment_retries", ("model_group",), upstream={k: float(v) for k, v in truth.items()},
          gatewatch=e2e_run.gatewatch.total("gatewatch_deployment_retries_total", ("model_group",)))


# -- attribution -----------------------------------------------------------------------------
def test_every_deployment_series_carries_account_and_region_of_the_config(e2e_run: Run) -> None:
    truth = deployments()
    seen: set[str] = set()
    wrong: list[str] = []
    for sample in e2e_run.gatewatch.samples:
        model_id = sample.labels.get("model_id")
        if not sample.name.startswith("litellm_") or model_id not in truth or "aws_account" not in sample.labels:
            continue
        seen.add(model_id)
        expected = (truth[model_id]["account"], truth[model_id]["region"])
        got = (sample.labels["aws_account"], sample.labels["aws_region"])
        if got != expected:
            wrong.append(f"{sample.name}{{model_id={model_id}}}: aws_account/aws_region {got}, config says {expected}")
    assert not wrong, "\n".join(wrong[:40])
    used = {c.deployment for c in e2e_run.calls if c.ok}
    missing = used - seen
    assert not missing, f"deployments that served calls but have no gatewatch series: {missing}"


def test_catalog_limits_come_from_the_config(e2e_run: Run) -> None:
    truth = deployments()
    for limit in ("rpm", "tpm"):
        expected = {(dep_id,): float(d[limit]) for dep_id, d in truth.items() if d[limit] is not None}
        got = e2e_run.gatewatch.total(f"litellm_deployment_{limit}_limit", ("model_id",))
        assert got == expected, f"{limit}: config={expected} gatewatch={got}"


def test_health_check_calls_are_kept_apart(e2e_run: Run) -> None:
    """LiteLLM's own /health calls: counted apart by both, never as client requests."""
    health = {"api_key_alias": "litellm-internal-health-check"}
    litellm_calls = e2e_run.litellm.value("litellm_deployment_total_requests_total", health)
    litellm_ok = e2e_run.litellm.value("litellm_proxy_total_requests_metric_total", health)
    gatewatch_calls = e2e_run.gatewatch.value("gatewatch_health_check_calls_total")
    gatewatch_ok = e2e_run.gatewatch.value("gatewatch_health_check_calls_total", {"status": "success"})
    assert litellm_calls >= len(deployments()) - 1
    assert (gatewatch_calls, gatewatch_ok) == (litellm_calls, litellm_ok), (
        f"health-check calls (all, successful): litellm=({litellm_calls:g}, {litellm_ok:g}) "
        f"gatewatch=({gatewatch_calls:g}, {gatewatch_ok:g})")
    assert not e2e_run.gatewatch.select("litellm_proxy_total_requests_metric_total", health)


def test_health_poller_sees_the_proxy_up(e2e_run: Run) -> None:
    pytest.importorskip("agent.sources.health", reason="the health poller (issue 3) is not in this checkout")
    up = e2e_run.gatewatch.total("gatewatch_proxy_up", ("endpoint",))
    assert up == {("readiness",): 1.0, ("liveliness",): 1.0}, up
    assert e2e_run.gatewatch.value("gatewatch_events_received_total", {"source": "health"}) >= 2


def test_gatewatch_rejected_nothing(e2e_run: Run) -> None:
    rejected = e2e_run.gatewatch.total("gatewatch_events_rejected_total", ("source", "reason"))
    ingest = e2e_run.gatewatch.total("gatewatch_ingest_requests_total", ("route", "code"))
    assert not drop_zero(rejected), rejected
    assert all(code == "200" for (_, code), n in ingest.items() if n), ingest
