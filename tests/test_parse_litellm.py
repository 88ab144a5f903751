"""StandardLoggingPayload -> Event, against every real capture."""

from __future__ import annotations

import json

import pytest

from agent.events import Kind
from agent.parse.litellm import BodyError, decode_body
from tests.conftest import FIXTURES, capture_items


def all_capture_files():
    return sorted(FIXTURES.glob("generic_api_*.json"))


@pytest.mark.parametrize("path", all_capture_files(), ids=lambda p: p.name)
def test_every_captured_item_decodes(path):
    items = capture_items(path.name)
    batch = decode_body(json.dumps(items).encode())
    assert batch.rejected == {}
    assert len(batch.events) == len(items)
    for item, event in zip(items, batch.events, strict=True):
        assert event.kind == Kind.REQUEST
        assert event.status == item["status"]
        assert event.call_id == item["litellm_call_id"]
        assert event.input_tokens == item["prompt_tokens"]
        assert event.output_tokens == item["completion_tokens"]
        assert event.cost_usd == pytest.approx(item["response_cost"] or 0.0)
        assert event.start_time == item["startTime"] and event.time == item["endTime"]
        assert event.deployment == (item["model_id"] or "")
        assert event.model_group == (item["model_group"] or "")


def _one(name: str, index: int = 0):
    return decode_body(json.dumps(capture_items(name)).encode()).events[index]


def test_streaming_has_ttft_and_non_streaming_does_not():
    item = capture_items("generic_api_streaming.json")[0]
    event = _one("generic_api_streaming.json")
    assert event.stream is True
    assert event.ttft == pytest.approx(item["completionStartTime"] - item["startTime"])
    assert event.finish_reasons == ("stop",)
    assert event.remaining_requests == 995 and event.remaining_tokens == 99000
    assert _one("generic_api_success.json").ttft is None


def test_bedrock_throttling_is_rate_limited():
    event = _one("generic_api_bedrock_throttled.json")
    assert event.status == "failure" and event.status_code == "429"
    assert event.rate_limited is True
    assert event.api_provider == "bedrock"
    assert event.error_class == "RateLimitError"
    assert event.normalized_error == "429_RATE_LIMIT_EXCEEDED"


def test_classification_of_failures():
    assert _one("generic_api_upstream_500.json").status_code == "500"
    assert _one("generic_api_upstream_500.json").rate_limited is False
    assert _one("generic_api_timeout.json").status_code == "408"
    assert _one("generic_api_upstream_429.json").rate_limited is True
    no_dep = decode_body(json.dumps(capture_items("generic_api_no_deployments.json")).encode()).events
    router = [e for e in no_dep if e.error_class == "RouterRateLimitError"]
    assert router and all(e.rate_limited and e.deployment == "" for e in router)
    budget = _one("generic_api_budget_exceeded.json", 1)
    assert budget.normalized_error == "429_BUDGET_EXCEEDED"
    assert budget.rate_limited is False  # a LiteLLM budget, not throttling


def test_health_check_traffic_is_flagged():
    events = decode_body(json.dumps(capture_items("generic_api_health.json")).encode()).events
    assert events and all(e.health_check for e in events)
    assert not _one("generic_api_success.json").health_check


def test_retry_and_fallback_headers():
    retry = decode_body(json.dumps(capture_items("generic_api_retry_then_success.json")).encode()).events
    assert retry[0].status == "failure" and retry[1].status == "success"
    assert retry[1].retries == 2 and retry[0].call_id == retry[1].call_id
    assert _one("generic_api_fallback_2.json").fallbacks == 1


def test_content_is_not_kept_unless_asked():
    body = json.dumps(capture_items("generic_api_success.json")).encode()
    assert decode_body(body).events[0].input_messages is None
    captured = decode_body(body, capture_content=True).events[0]
    assert captured.input_messages and captured.input_messages[0]["role"] == "user"


def test_formats_array_single_and_ndjson():
    items = capture_items("generic_api_success.json")
    array = decode_body(json.dumps(items).encode())
    single = decode_body(json.dumps(items[0], indent=2).encode())
    ndjson = decode_body("\n".join(json.dumps(i) for i in items).encode() + b"\n")
    assert len(array.events) == 3 and len(single.events) == 1 and len(ndjson.events) == 3
    assert [e.call_id for e in ndjson.events] == [e.call_id for e in array.events]


def test_bad_items_are_counted_and_skipped():
    items = capture_items("generic_api_success.json")
    body = json.dumps([items[0], 42, {"status": "success"}, {**items[1], "startTime": "not a time"}, items[2]])
    batch = decode_body(body.encode())
    assert len(batch.events) == 2
    assert sum(batch.rejected.values()) == 3
    assert batch.rejected["not_an_object"] == 1 and batch.rejected["missing_field"] == 1


@pytest.mark.parametrize("body", [b"", b"   ", b"hello", b"[1, 2", b"<xml/>"])
def test_body_that_is_not_json_is_an_error(body):
    with pytest.raises(BodyError):
        decode_body(body)


def test_older_litellm_shapes():
    """Seen on LiteLLM 1.80/1.100: no litellm_call_id, empty error_code on router errors."""
    item = dict(capture_items("generic_api_no_deployments.json")[-1])
    item.pop("litellm_call_id")
    item["error_information"] = {**item["error_information"], "error_code": "", "normalized_error": None}
    (event,) = decode_body(json.dumps([item]).encode()).events
    assert event.status_code == "429" and event.rate_limited
    assert event.call_id == item["trace_id"]
