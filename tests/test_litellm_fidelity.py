"""gatewatch writes LiteLLM's own label values for LiteLLM's metric names, on real captures.

The witness is LiteLLM 1.108.7's own `/metrics/` (tests/fixtures/litellm/prometheus_metrics.txt),
scraped after the same traffic whose callbacks and logs are the other captures. Each case
replays one scenario's captures through gatewatch (parser, enricher with the proxy's
config.yaml as catalog, request merging, the Prometheus sink) and checks that every series
gatewatch writes for that scenario is a series LiteLLM wrote too: same metric, same values
of every label both have (gatewatch's extra `aws_account` / `aws_region` left aside).

The rules come from LiteLLM's prometheus logger (litellm/integrations/prometheus.py and
litellm/router_utils/cooldown_callbacks.py, 1.108.7); each test names the one it checks.
Where gatewatch knowingly differs, the test says so and pins gatewatch's value.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable

import pytest
from prometheus_client import CollectorRegistry

from agent.enrich import Catalog, Enricher, catalog_from_config_text
from agent.events import Event, Kind
from agent.exposition import generate_latest
from agent.parse.litellm import decode_body
from agent.parse.logs import LogParser
from agent.pipeline import Pipeline, RequestTracker
from agent.selfmetrics import SelfMetrics
from agent.sinks.prometheus import PrometheusSink
from tests.conftest import FIXTURES, capture_items
from tests.promtext import samples

GATEWATCH_ONLY = {"aws_account", "aws_region"}
MISSING = ("", "None")  # LiteLLM spells a missing value both ways, even within one metric


@functools.cache
def litellm_series() -> list[tuple[str, dict[str, str], float]]:
    return samples((FIXTURES / "prometheus_metrics.txt").read_text())


class Lab:
    """gatewatch's pipeline with the proxy's own config.yaml as its catalog."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.registry = CollectorRegistry()
        self.metrics = SelfMetrics(self.registry)
        if catalog is None:
            catalog = catalog_from_config_text((FIXTURES / "config.yaml").read_text())
        self.catalog = catalog
        self.sink = PrometheusSink(self.registry, self.metrics, catalog=catalog)
        self.pipeline = Pipeline(Enricher(catalog, self.metrics.count_unattributed), RequestTracker(60.0),
                                 [self.sink])
        self.logs = LogParser(lookup=catalog.get)

    def callbacks(self, *names: str) -> Lab:
        for name in names:
            self.pipeline.publish(decode_body(json.dumps(capture_items(name)).encode()).events)
        self.pipeline.flush()
        return self

    def log_file(self, name: str) -> Lab:
        for line in (FIXTURES / name).read_text().splitlines():
            self.pipeline.publish(self.logs.parse(line))
        return self

    def publish(self, events: Iterable[Event]) -> Lab:
        self.pipeline.publish(list(events))
        self.pipeline.flush()
        return self

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(labels, value) for n, labels, value in samples(generate_latest(self.registry).decode())
                if n == name]


def same(a: str, b: str) -> bool:
    return a == b or (a in MISSING and b in MISSING)


def litellm_has(name: str, labels: dict[str, str], ignore: frozenset[str] = frozenset()) -> bool:
    """LiteLLM wrote a series of `name` whose values agree with every label gatewatch shares."""
    for n, theirs, _ in litellm_series():
        if n != name:
            continue
        shared = [k for k in labels if k not in GATEWATCH_ONLY and k not in ignore and k in theirs]
        if shared and all(same(labels[k], theirs[k]) for k in shared):
            return True
    return False


def first_attempt_deployment(name: str, labels: dict[str, str]) -> frozenset[str]:
    """Known difference (README, "LiteLLM compatibility"): a request that failed after retries is
    labelled with its first attempt's deployment, the only one the callback reports; LiteLLM
    labels it with its last attempt's."""
    failed = labels.get("status_code", "200") != "200" or "exception_status" in labels
    return frozenset({"model_id"}) if name in REQUESTS and failed else frozenset()


def assert_litellm_wrote_the_same(lab: Lab, *names: str) -> None:
    wrong = [f"{name}{labels}" for name in names for labels, _ in lab.series(name)
             if not litellm_has(name, labels, first_attempt_deployment(name, labels))]
    assert not wrong, "series gatewatch wrote that LiteLLM did not:\n" + "\n".join(wrong)


def only(lab: Lab, name: str, **where: str) -> dict[str, str]:
    rows = [labels for labels, value in lab.series(name) if value and all(labels.get(k) == v for k, v in where.items())]
    assert len(rows) == 1, (name, where, lab.series(name))
    return rows[0]


@pytest.fixture(autouse=True)
def _lab_env(lab_environ):  # the fixture config resolves os.environ/UPSTREAM_* like the proxy did
    return lab_environ


REQUESTS = ("litellm_proxy_total_requests_metric_total", "litellm_proxy_failed_requests_metric_total")


# -- requests refused before routing (async_post_call_failure_hook) -------------------------
def test_bad_key_is_counted_under_the_model_asked_for():
    """requested_model = _bounded_requested_model_label(request_data["model"]): "gpt-lab", not "None"."""
    lab = Lab().callbacks("generic_api_bad_key.json")
    failed = only(lab, "litellm_proxy_failed_requests_metric_total")
    assert (failed["requested_model"], failed["exception_status"], failed["exception_class"],
            failed["api_provider"]) == ("gpt-lab", "400", "ProxyException", "openai")
    assert_litellm_wrote_the_same(lab, *REQUESTS)


def test_unknown_model_is_other():
    """A model the router does not recognize collapses into LiteLLM's "other" bucket."""
    lab = Lab().callbacks("generic_api_model_not_found.json")
    failed = only(lab, "litellm_proxy_failed_requests_metric_total")
    assert (failed["requested_model"], failed["exception_status"], failed["exception_class"],
            failed["api_provider"]) == ("other", "400", "ProxyModelNotFoundError", "None")
    assert_litellm_wrote_the_same(lab, *REQUESTS)


def test_unknown_model_keeps_its_name_without_a_catalog():
    """Known difference: with no LiteLLM config loaded gatewatch cannot tell a known model from
    an unknown one, so it keeps the name (LiteLLM always knows its router)."""
    lab = Lab(catalog=Catalog()).callbacks("generic_api_model_not_found.json")
    assert only(lab, "litellm_proxy_failed_requests_metric_total")["requested_model"] == "does-not-exist"


def test_budget_exceeded_has_no_status_code():
    """The budget's ValueError has no status_code: LiteLLM labels str(None), not 429."""
    lab = Lab().callbacks("generic_api_budget_exceeded.json", "generic_api_budget_exceeded_2.json",
                          "generic_api_budget_exceeded_3.json")
    failed = only(lab, "litellm_proxy_failed_requests_metric_total", exception_class="ValueError")
    assert (failed["exception_status"], failed["requested_model"], failed["api_provider"]) == (
        "None", "budget-model", "None")
    total = only(lab, "litellm_proxy_total_requests_metric_total", model_id="None")
    assert total["status_code"] == "None"
    assert_litellm_wrote_the_same(lab, *REQUESTS)
    # still not provider throttling: no rate-limited count
    assert not [v for _, v in lab.series("gatewatch_rate_limited_requests_total") if v]


def test_refused_requests_are_counted_as_unattributed():
    """README: events labelled `unknown` are counted on gatewatch_unattributed_events_total."""
    lab = Lab().callbacks("generic_api_bad_key.json", "generic_api_model_not_found.json",
                          "generic_api_no_deployments.json")
    failed = [labels for labels, v in lab.series("litellm_proxy_failed_requests_metric_total")
              if v and labels["model_id"] in MISSING]
    assert failed and all((f["aws_account"], f["aws_region"]) == ("unknown", "unknown") for f in failed)
    counted = {labels["model_group"]: v for labels, v in lab.series("gatewatch_unattributed_events_total")
               if labels["deployment"] == "None"}
    # bad key (gpt-lab), unknown model (other), 2 "No deployments available" refusals (gpt-lab)
    assert counted == {"gpt-lab": 3.0, "other": 1.0}


def test_health_check_calls_are_not_unattributed():
    """LiteLLM's own health-check calls are not requests; the one failed GET /health (no key)
    of the capture is a refused request like any other."""
    lab = Lab().callbacks("generic_api_health.json", "generic_api_health_2.json")
    counted = {tuple(labels.values()): v for labels, v in lab.series("gatewatch_unattributed_events_total") if v}
    assert counted == {("None", "None"): 1.0}


def test_api_provider_is_spelled_None_when_missing():
    lab = Lab().callbacks("generic_api_model_not_found.json", "generic_api_budget_exceeded.json")
    providers = {labels["api_provider"] for name in REQUESTS for labels, v in lab.series(name) if v}
    assert "" not in providers and "None" in providers


# -- fallbacks (async_log_success_event: requested_model = the payload's model_group) -------
def test_fallback_counts_under_the_group_that_served():
    lab = Lab().callbacks("generic_api_fallback.json", "generic_api_fallback_2.json")
    (total,) = [labels for labels, v in lab.series("litellm_proxy_total_requests_metric_total") if v]
    assert (total["requested_model"], total["status_code"]) == ("gpt-lab", "200")
    spend = only(lab, "litellm_spend_metric_total")
    assert spend["requested_model"] == "gpt-lab"
    # the group asked for stays on the fallback counter (log_success_fallback_event)
    fallback = only(lab, "litellm_deployment_successful_fallbacks_total")
    assert (fallback["requested_model"], fallback["fallback_model"]) == ("error-model", "gpt-lab")
    assert_litellm_wrote_the_same(lab, "litellm_proxy_total_requests_metric_total",
                                  "litellm_deployment_successful_fallbacks_total")


# -- cooldowns (router_cooldown_event_callback) --------------------------------------------
def test_cooldown_is_labelled_with_the_model_group():
    """litellm_model_name = deployment.model_name (the group), on the counter and on the state 2."""
    lab = Lab().log_file("logs_no_deployments.jsonl")
    cooled = [labels for labels, v in lab.series("litellm_deployment_cooled_down_total") if v]
    assert {c["model_id"] for c in cooled} == {"gpt-lab-acct111-use1", "gpt-lab-acct222-euw1",
                                               "gpt-lab-acct333-usw2"}
    assert {(c["litellm_model_name"], c["api_provider"], c["exception_status"]) for c in cooled} == {
        ("gpt-lab", "openai", "429")}
    assert {c["api_base"] for c in cooled} == {"http://127.0.0.1:18001/v1", "http://127.0.0.1:18002/v1",
                                               "http://127.0.0.1:18003/v1"}
    assert_litellm_wrote_the_same(lab, "litellm_deployment_cooled_down_total")
    state = {(labels["litellm_model_name"], labels["model_id"]): v for labels, v in
             lab.series("litellm_deployment_state")}
    assert state == {("gpt-lab", c["model_id"]): 2.0 for c in cooled}


# -- deployment state (set_deployment_healthy / partial_outage / complete_outage) -----------
def test_deployment_state_series_are_litellms():
    """Calls set 0 / 1 under the provider model name; a cooldown sets 2 under the group name, a
    series of its own. The log's failed retries do not touch the gauge
    (LiteLLM's callbacks never see them); they feed the rules. Known difference: the opt-in
    /health polling (litellm.deployment_health_interval) does set it."""
    lab = Lab().callbacks("generic_api_success.json", "generic_api_retry_then_success.json",
                          "generic_api_no_deployments.json").log_file("logs_no_deployments.jsonl")
    state = {(labels["litellm_model_name"], labels["model_id"]): v for labels, v in
             lab.series("litellm_deployment_state")}
    assert state[("gpt-lab", "gpt-lab-acct111-use1")] == 2.0
    assert state[("fake-ok", "gpt-lab-acct111-use1")] in (0.0, 1.0)
    assert_litellm_wrote_the_same(lab, "litellm_deployment_state")

    def reading(source: str, value: float) -> Event:
        return Event(kind=Kind.DEPLOYMENT_STATE, time=1.0, source=source, deployment="gpt-lab-acct222-euw1",
                     model="fake-ok", model_group="gpt-lab", api_provider="openai",
                     api_base="http://127.0.0.1:18002/v1", value=value)

    def series() -> dict[tuple[str, str], float]:
        return {(labels["litellm_model_name"], labels["model_id"]): v for labels, v in
                lab.series("litellm_deployment_state")}

    # Known difference: LiteLLM keeps the cooldown's 2 for good; gatewatch sets it back to 0 at
    # the deployment's next successful call (and only that deployment's). A success that started
    # before the cooldown and arrives after it (callbacks come in batches, the cooldown from the
    # log tail) is not that call: the 2 stays
    streaming = decode_body(json.dumps(capture_items("generic_api_streaming.json")).encode()).events
    assert {e.deployment for e in streaming} == {"gpt-lab-acct111-use1"}
    lab.publish(streaming)  # captured before the cooldown in logs_no_deployments.jsonl
    assert series()[("gpt-lab", "gpt-lab-acct111-use1")] == 2.0
    later = 1795640691.5722036 + 10.0 - min(e.time for e in streaming)  # after acct111's cooldown started
    lab.publish([dataclasses.replace(e, time=e.time + later,
                                     start_time=None if e.start_time is None else e.start_time + later)
                 for e in streaming])  # a success on gpt-lab-acct111-use1
    assert series()[("gpt-lab", "gpt-lab-acct111-use1")] == 0.0
    assert series()[("gpt-lab", "gpt-lab-acct333-usw2")] == 2.0

    before = series()
    lab.publish([reading("log", 1.0)])
    assert series() == before
    lab.publish([reading("health", 2.0)])
    assert series() == {**before, ("fake-ok", "gpt-lab-acct222-euw1"): 2.0}


def test_bedrock_state_uses_litellms_model_and_api_base():
    lab = Lab().callbacks("generic_api_bedrock_success.json", "generic_api_bedrock_throttled.json")
    assert_litellm_wrote_the_same(lab, "litellm_deployment_state", "litellm_deployment_success_responses_total",
                                  "litellm_deployment_failure_responses_total")


# -- remaining requests / tokens (set_llm_deployment_success_metrics) -----------------------
def test_remaining_gauges_come_from_successes_only():
    """A 429's x-ratelimit-remaining-* = 0 is not a reading LiteLLM keeps: it sets the gauges from
    successful calls only, so one throttled call cannot pin a healthy deployment at 0."""
    lab = Lab().callbacks("generic_api_success.json")
    before = {labels["model_id"]: v for labels, v in lab.series("litellm_remaining_requests_metric")}
    assert before and all(v > 0 for v in before.values())
    lab.callbacks("generic_api_no_deployments.json")  # 429s with remaining 0 on every gpt-lab deployment
    after = {labels["model_id"]: v for labels, v in lab.series("litellm_remaining_requests_metric")}
    assert after == before
    assert_litellm_wrote_the_same(lab, "litellm_remaining_requests_metric", "litellm_remaining_tokens_metric")


def test_every_capture_writes_only_series_litellm_wrote():
    """All callback captures and the cooldown logs at once: per-deployment and per-request
    metrics, label for label (health checks are kept apart by design: gatewatch_health_check_calls)."""
    names = [p.name for p in sorted(FIXTURES.glob("generic_api_*.json"))
             if not p.name.startswith("generic_api_single_")]
    lab = Lab().callbacks(*names).log_file("logs_no_deployments.jsonl")
    assert_litellm_wrote_the_same(
        lab, *REQUESTS, "litellm_deployment_total_requests_total", "litellm_deployment_success_responses_total",
        "litellm_deployment_failure_responses_total", "litellm_deployment_state",
        "litellm_deployment_cooled_down_total", "litellm_remaining_requests_metric", "litellm_remaining_tokens_metric",
        "litellm_deployment_successful_fallbacks_total", "litellm_spend_metric_total")
