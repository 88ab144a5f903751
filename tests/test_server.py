"""The ingest server over loopback: every fixture batch in, metrics equal to the payloads."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import aiohttp
import pytest

from tests.conftest import FIXTURES, batch_files, capture_items, load_capture
from tests.promtext import samples, series, total
from tests.test_enrich import expected_attribution


def fixture_items() -> list[dict]:
    return [item for path in batch_files() for item in capture_items(path.name)]


def user_items() -> list[dict]:
    return [i for i in fixture_items() if (i["metadata"] or {}).get("user_api_key_alias")
            != "litellm-internal-health-check"]


async def post_all(url: str, token: str | None = None) -> list[dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answers = []
    async with aiohttp.ClientSession() as session:
        for path in batch_files():
            body = load_capture(path.name)["body_text"] or json.dumps(load_capture(path.name)["body_json"])
            async with session.post(f"{url}/v1/litellm/events", data=body, headers={
                    **headers, "Content-Type": "application/json"}) as response:
                assert response.status == 200, await response.text()
                answers.append(await response.json())
    return answers


async def get_metrics(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        return await response.text()


@pytest.fixture
async def replayed(gatewatch_server, lab_environ):
    gw, url = await gatewatch_server({"litellm": {"config": str(FIXTURES / "config.yaml")}})
    answers = await post_all(url)
    gw.pipeline.flush()  # release failures held for the retry/fallback merge window
    return gw, url, answers, samples(await get_metrics(url))


async def test_all_items_accepted(replayed):
    _gw, _url, answers, rows = replayed
    assert sum(a["accepted"] for a in answers) == len(fixture_items())
    assert sum(a["rejected"] for a in answers) == 0
    assert total(rows, "gatewatch_events_received_total", source="callback") == len(fixture_items())


async def test_deployment_counts_equal_the_payloads(replayed):
    *_, rows = replayed
    expected_total, expected_ok, expected_fail = Counter(), Counter(), Counter()
    for item in user_items():
        if not (item["model_id"] or item["api_base"]):
            continue
        key = (item["model_group"] or "", item["model_id"] or "None")
        expected_total[key] += 1
        (expected_ok if item["status"] == "success" else expected_fail)[key] += 1
    for name, expected in (("litellm_deployment_total_requests_total", expected_total),
                           ("litellm_deployment_success_responses_total", expected_ok),
                           ("litellm_deployment_failure_responses_total", expected_fail)):
        got = Counter()
        for n, labels, value in rows:
            if n == name:
                got[(labels["model_group"], labels["model_id"])] += value
        assert got == expected, name


async def test_tokens_and_spend_equal_the_payloads(replayed):
    *_, rows = replayed
    ok = [i for i in user_items() if i["status"] == "success"]
    by_group = defaultdict(lambda: [0, 0, 0, 0.0])
    for item in ok:
        acc = by_group[item["model_group"]]
        acc[0] += item["prompt_tokens"]
        acc[1] += item["completion_tokens"]
        acc[2] += item["total_tokens"]
        acc[3] += item["response_cost"]
    for group, (tin, tout, ttotal, cost) in by_group.items():
        assert total(rows, "litellm_input_tokens_metric_total", model_group=group) == tin
        assert total(rows, "litellm_output_tokens_metric_total", model_group=group) == tout
        assert total(rows, "litellm_total_tokens_metric_total", model_group=group) == ttotal
        assert total(rows, "litellm_spend_metric_total", model_group=group) == pytest.approx(cost)
    assert total(rows, "litellm_llm_api_latency_metric_count") == len(ok)
    streaming = [i for i in ok if i["stream"]]
    assert total(rows, "litellm_llm_api_time_to_first_token_metric_count") == len(streaming)


async def test_one_request_per_call_id(replayed):
    *_, rows = replayed
    outcome: dict[str, str] = {}
    for item in user_items():
        if item["status"] == "success" or item["litellm_call_id"] not in outcome:
            outcome[item["litellm_call_id"]] = item["status"]
    assert total(rows, "litellm_proxy_total_requests_metric_total") == len(outcome)
    failed = sum(1 for status in outcome.values() if status == "failure")
    assert total(rows, "litellm_proxy_failed_requests_metric_total") == failed
    # the retried request counts once, as a success on the deployment that served it
    fallback = capture_items("generic_api_fallback_2.json")[0]
    # counted under the group that served it, as LiteLLM does (requested_model = its model_group)
    assert total(rows, "litellm_proxy_total_requests_metric_total", requested_model="error-model",
                 status_code="200") == 0
    assert total(rows, "litellm_proxy_total_requests_metric_total", requested_model=fallback["model_group"],
                 model_id=fallback["model_id"], status_code="200") >= 1
    assert total(rows, "litellm_deployment_successful_fallbacks_total", requested_model="error-model",
                 fallback_model=fallback["model_group"]) == 1


async def test_every_deployment_series_carries_account_and_region(replayed):
    *_, rows = replayed
    expected = expected_attribution()
    checked = 0
    for name in ("litellm_deployment_total_requests_total", "litellm_proxy_total_requests_metric_total",
                 "litellm_spend_metric_total", "litellm_llm_api_latency_metric_count"):
        for labels in series(rows, name):
            dep = labels.get("model_id")
            if dep in expected and all(expected[dep]):
                assert (labels["aws_account"], labels["aws_region"]) == expected[dep], (name, labels)
                checked += 1
    assert checked > 20
    gpt_lab = {labels["model_id"] for labels in series(rows, "litellm_deployment_total_requests_total")
               if labels["model_group"] == "gpt-lab"}
    assert gpt_lab == {"gpt-lab-acct111-use1", "gpt-lab-acct222-euw1", "gpt-lab-acct333-usw2"}


async def test_health_checks_stay_out_of_user_series(replayed):
    *_, rows = replayed
    health = [i for i in fixture_items() if i not in user_items()]
    assert total(rows, "gatewatch_health_check_calls_total") == len(health)
    assert all(labels["model_id"] != "None" or labels["model_group"] != ""
               for labels in series(rows, "litellm_deployment_total_requests_total"))


async def test_rate_limited_and_cooldown_signals(replayed):
    *_, rows = replayed
    limited = [i for i in user_items() if i["status"] == "failure"
               and i["error_information"]["normalized_error"] in ("429_RATE_LIMIT_EXCEEDED",
                                                                   "429_NO_HEALTHY_DEPLOYMENTS")]
    assert total(rows, "gatewatch_rate_limited_requests_total") == len(limited)
    assert total(rows, "gatewatch_rate_limited_requests_total", api_provider="bedrock",
                 aws_region="us-east-1") == 1


async def test_catalog_limits_are_exported(replayed):
    *_, rows = replayed
    assert total(rows, "litellm_deployment_rpm_limit", model_id="gpt-lab-acct111-use1",
                 aws_account="111111111111") == 600


async def test_token_is_required_when_configured(gatewatch_server):
    _gw, url = await gatewatch_server({"server": {"auth_token": "s3cret-token"}})
    body = json.dumps(capture_items("generic_api_success.json"))
    async with aiohttp.ClientSession() as session:
        for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                                ({"Authorization": "Bearer s3cret-token"}, 200)):
            async with session.post(f"{url}/v1/litellm/events", data=body, headers=headers) as response:
                assert response.status == status
                assert "s3cret-token" not in await response.text()
        async with session.get(f"{url}/metrics") as response:  # scrapes stay open
            assert response.status == 200
        alert = load_capture("alert_webhook_health_1.json")["body_json"]
        for query, status in (("", 401), ("?token=wrong", 401), ("?token=s3cret-token", 200)):
            async with session.post(f"{url}/v1/litellm/alerts{query}", json=alert) as response:
                assert response.status == status  # LiteLLM's webhook cannot send headers
        async with session.post(f"{url}/v1/litellm/events?token=s3cret-token", data=body) as response:
            assert response.status == 401  # the callback can and must use the header


async def test_oversized_body_is_413(gatewatch_server):
    _gw, url = await gatewatch_server({"server": {"max_body_bytes": "64KB"}})
    items = capture_items("generic_api_success.json") * 10
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/litellm/events", data=json.dumps(items)) as response:
            assert response.status == 413
        async with session.post(f"{url}/v1/litellm/events", data=json.dumps(items[:1])) as response:
            assert response.status == 200


async def test_garbage_is_400_and_partial_garbage_is_200(gatewatch_server):
    _gw, url = await gatewatch_server()
    good = capture_items("generic_api_success.json")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/litellm/events", data=b"not json at all") as response:
            assert response.status == 400
            assert "not JSON" in (await response.json())["error"]
        async with session.post(f"{url}/v1/litellm/events", data=json.dumps([good[0], "x", {}, good[1]])) as r:
            assert r.status == 200
            assert await r.json() == {"accepted": 2, "rejected": 2,
                                      "rejected_reasons": {"not_an_object": 1, "missing_field": 1}}
        text = await get_metrics(url)
    assert total(text, "gatewatch_events_rejected_total", source="callback") == 3


async def test_alert_bodies(gatewatch_server):
    _gw, url = await gatewatch_server()
    bodies = [load_capture("alert_webhook_health_1.json")["body_json"],
              load_capture("alert_slack_outage_1.json")["body_json"],
              load_capture("alert_slack_budget_exceeded_1.json")["body_json"]]
    async with aiohttp.ClientSession() as session:
        for body in bodies:
            async with session.post(f"{url}/v1/litellm/alerts", json=body) as response:
                assert response.status == 200 and (await response.json())["accepted"] == 1
        async with session.post(f"{url}/v1/litellm/alerts", json={"what": 1}) as response:
            assert (await response.json())["rejected"] == 1
        text = await get_metrics(url)
    assert total(text, "gatewatch_litellm_alerts_total", alert_type="budget_crossed") == 1
    assert total(text, "gatewatch_proxy_errors_total", error_class="outage_alerts") == 1


async def test_health_and_readiness(gatewatch_server):
    gw, url = await gatewatch_server()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{url}/readyz") as response:
            assert response.status == 200 and (await response.json())["ready"] is True
        gw.ready = False
        async with session.get(f"{url}/readyz") as response:
            assert response.status == 503


async def test_series_limit_folds_overflow(gatewatch_server):
    _gw, url = await gatewatch_server({"labels": {"series_limit": 3}})
    item = capture_items("generic_api_success.json")[0]
    items = []
    for n in range(10):
        copy = json.loads(json.dumps(item))
        copy["model_id"] = f"dep-{n}"
        items.append(copy)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/litellm/events", data=json.dumps(items)) as response:
            assert (await response.json())["accepted"] == 10
        text = await get_metrics(url)
    deps = [labels["model_id"] for labels in series(text, "litellm_deployment_total_requests_total")]
    assert len(deps) == 4 and "__overflow__" in deps
    assert total(text, "litellm_deployment_total_requests_total", model_id="__overflow__") == 7
    assert total(text, "gatewatch_series_overflow_total", metric="litellm_deployment_total_requests") == 7
