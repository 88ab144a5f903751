"""Label for label: gatewatch's series under LiteLLM's metric names are LiteLLM's own series.

test_e2e_counts.py checks the numbers per model group and deployment; this module checks the
label *values* LiteLLM writes for the same traffic, where they come from rules of LiteLLM's
prometheus logger that the callback payload does not spell out (see the README, "Metric
reference", and tests/test_litellm_fidelity.py for the same rules on the captures):

  * refused before routing: requested_model is the model asked for, `other` when the proxy
    does not know it; a budget refusal has status `None`; api_provider `None` when unknown;
  * a cooldown is labelled with the model *group* (litellm_model_name="gpt-lab"), and its
    deployment state 2 is a series of its own;
  * litellm_deployment_state is set by calls (0 / 1) and cooldowns (2) only;
  * the remaining requests/tokens gauges are set by successful calls only.

Known differences, left out of the comparison and documented in the README: the series
LiteLLM writes for its own health checks (model_id ""), and a failed request's deployment
(gatewatch: the first attempt's, LiteLLM: the last attempt's).
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.e2e.promtext import drop_zero, norm, table
from tests.e2e.scenario import (
    CROSSED_BUDGET,
    GPT_LAB_DEPLOYMENTS,
    Run,
    all_in_cooldown,
    fallbacks_counted_under_the_group_asked_for,
    not_health_check,
)
from tests.e2e.test_e2e_counts import deployments

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STATE_LABELS = ("litellm_model_name", "model_id", "api_base", "api_provider")
COOLDOWN_LABELS = (*STATE_LABELS, "exception_status")
REMAINING_LABELS = ("model_group", "api_provider", "api_base", "litellm_model_name", "model_id", "api_key_alias")


def compare(title: str, by: tuple[str, ...], litellm: dict, gatewatch: dict) -> None:
    witnesses = {"litellm": drop_zero(litellm), "gatewatch": drop_zero(gatewatch)}
    assert witnesses["litellm"] == witnesses["gatewatch"], table(f"{title}: the witnesses disagree", witnesses, by)


def real_deployment(labels) -> bool:
    return not_health_check(labels) and norm(labels.get("model_id", "")) != ""


def test_cooled_down_labels(e2e_run: Run) -> None:
    """router_cooldown_event_callback: litellm_model_name is the deployment's model group."""
    litellm = e2e_run.litellm.total("litellm_deployment_cooled_down_total", COOLDOWN_LABELS)
    assert sum(litellm.values()) >= 3
    groups = {dep["group"] for dep in deployments().values()}
    assert "gpt-lab" in {key[0] for key in litellm} and {key[0] for key in litellm} <= groups, litellm
    compare("litellm_deployment_cooled_down", COOLDOWN_LABELS, litellm,
            e2e_run.gatewatch.total("litellm_deployment_cooled_down_total", COOLDOWN_LABELS))


def served_after_its_last_fault(run: Run) -> set[str]:
    """Deployments with a successful call later (by call order) than the last upstream fault
    seen by a call of their group: the cooldown that fault caused is over."""
    group_of = {dep_id: dep["group"] for dep_id, dep in deployments().items()}
    last_fault: dict[str, int] = {}
    for call in run.calls:
        if call.status in (408, 429, 500, 503) and call.scenario not in ("bad_key", "unknown_model", "budget"):
            last_fault[call.model] = max(last_fault.get(call.model, -1), call.seq)
    return {c.deployment for c in run.calls
            if c.ok and c.seq > last_fault.get(group_of.get(c.deployment, ""), -1)}


def test_deployment_state(e2e_run: Run) -> None:
    """Every deployment's state series and value, LiteLLM's health-check series (model_id "") aside.

    Known difference: LiteLLM keeps a cooldown's 2 (the series under the model group's name) for
    good; gatewatch sets it back to 0 at the deployment's next successful call."""
    litellm = e2e_run.litellm.total("litellm_deployment_state", STATE_LABELS, real_deployment)
    gatewatch = e2e_run.gatewatch.total("litellm_deployment_state", STATE_LABELS)
    assert len({key[1] for key in litellm}) >= 10, litellm
    groups = {dep["group"] for dep in deployments().values()}
    cooled = {key for key, value in litellm.items() if key[0] in groups}
    assert cooled and all(litellm[key] == 2.0 for key in cooled), litellm
    recovered = served_after_its_last_fault(e2e_run)
    assert any(key[1] in recovered for key in cooled), "no deployment served again after its cooldown"
    litellm = {key: (0.0 if key in cooled and key[1] in recovered else value) for key, value in litellm.items()}
    # a gauge at 0 is a series too: compare the label sets before the values
    assert set(litellm) == set(gatewatch), table("litellm_deployment_state series", {
        "litellm": {k: litellm.get(k, -1.0) for k in set(litellm) | set(gatewatch)},
        "gatewatch": {k: gatewatch.get(k, -1.0) for k in set(litellm) | set(gatewatch)}}, STATE_LABELS)
    compare("litellm_deployment_state", STATE_LABELS, litellm, gatewatch)


@pytest.mark.parametrize("metric", ["litellm_remaining_requests_metric", "litellm_remaining_tokens_metric"])
def test_remaining_gauges(e2e_run: Run, metric: str) -> None:
    """Set from successful calls' x-ratelimit-remaining-* only: a 429's zero never sticks."""
    litellm = e2e_run.litellm.total(metric, REMAINING_LABELS, not_health_check)
    gatewatch = e2e_run.gatewatch.total(metric, REMAINING_LABELS)
    served = {call.deployment for call in e2e_run.calls if call.ok and call.deployment in GPT_LAB_DEPLOYMENTS}
    assert served == GPT_LAB_DEPLOYMENTS, f"the steady phase did not reach every deployment: {served}"
    assert {key[4] for key in litellm} >= served, sorted(litellm)
    assert set(litellm) == set(gatewatch), (sorted(litellm), sorted(gatewatch))
    compare(metric, REMAINING_LABELS, litellm, gatewatch)


def test_refused_requests_labels(e2e_run: Run) -> None:
    """A bad key (requested_model "gpt-lab"), an unknown model ("other"), a budget ("None")."""
    by = ("requested_model", "exception_status", "exception_class", "api_provider")

    def refused(labels) -> bool:
        return not_health_check(labels) and norm(labels.get("model_id", "")) == ""

    litellm = e2e_run.litellm.total("litellm_proxy_failed_requests_metric_total", by, refused)
    gatewatch = e2e_run.gatewatch.total("litellm_proxy_failed_requests_metric_total", by, refused)
    asked = {key[0] for key in litellm}
    assert {"gpt-lab", "other", "budget-model"} <= asked, litellm
    compare("refused requests", by, litellm, gatewatch)
    # the values `total` folds ("" and "None" are both LiteLLM's "missing"), exactly
    failed = "litellm_proxy_failed_requests_metric_total"
    for scrape in (e2e_run.litellm, e2e_run.gatewatch):
        budget = {(s.labels["exception_status"], s.labels["exception_class"])
                  for s in scrape.select(failed, {"requested_model": "budget-model"}) if s.value}
        assert budget == {("None", "ValueError")}, budget
    # gatewatch spells a missing provider "None" (the README's promise), never ""
    providers = {s.labels["api_provider"] for s in e2e_run.gatewatch.select(failed)}
    assert "" not in providers and "None" in providers


def test_refused_requests_are_unattributed(e2e_run: Run) -> None:
    """Refused before routing: aws_account/aws_region `unknown`, and counted as such."""
    refused = [c for c in e2e_run.calls if c.scenario in ("bad_key", "unknown_model")
               or CROSSED_BUDGET in c.error_message or all_in_cooldown(c)]
    labelled = [s for s in e2e_run.gatewatch.select("litellm_proxy_failed_requests_metric_total")
                if norm(s.labels["model_id"]) == ""]
    assert labelled and all((s.labels["aws_account"], s.labels["aws_region"]) == ("unknown", "unknown")
                            for s in labelled)
    counted = e2e_run.gatewatch.value("gatewatch_unattributed_events_total", {"deployment": "None"})
    assert counted == len(refused) == sum(s.value for s in labelled), (
        f"refused calls={len(refused)} unattributed={counted:g} "
        f"labelled unknown={sum(s.value for s in labelled):g} {Counter(c.scenario for c in refused)}")


def test_fallback_counts_under_the_group_that_served(e2e_run: Run) -> None:
    """As LiteLLM 1.108 does. LiteLLM >= 1.110 counts it under the group asked for instead (its
    `original_model_group`): a difference between LiteLLM versions, pinned here (README)."""
    by = ("requested_model", "model_id", "status_code")
    rescued = [c for c in e2e_run.calls if c.ok and c.fallbacks]
    assert rescued
    litellm = e2e_run.litellm.total("litellm_proxy_total_requests_metric_total", by, not_health_check)
    gatewatch = e2e_run.gatewatch.total("litellm_proxy_total_requests_metric_total", by)
    for call in rescued:
        served, asked = (call.model_group, call.deployment, "200"), (call.model, call.deployment, "200")
        expected = litellm.get(served, 0)
        if fallbacks_counted_under_the_group_asked_for():
            expected += litellm.get(asked, 0)
            assert litellm.get(asked, 0) > 0, (asked, litellm)
        assert gatewatch.get(served, 0) == expected > 0, (served, litellm.get(served), gatewatch.get(served))
        assert gatewatch.get(asked, 0) == 0, (asked, gatewatch.get(asked))
