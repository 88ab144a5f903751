"""Issue 19: bad input at the ingest edge never loses good data nor corrupts state.

Each test starts from the real LiteLLM captures, breaks one item the way the attacker /
broken-client run did, and checks that exactly that item is refused (with its reason),
the rest of the batch is counted by every sink, and nothing answers 5xx.
"""

from __future__ import annotations

import copy
import gzip
import json
import math

import aiohttp
import pytest

from tests.conftest import capture_items
from tests.promtext import samples, total

EVENTS = "/v1/litellm/events"


def good_items(n: int = 5) -> list[dict]:
    """`n` successful user calls from the captures (with deployment, tokens and cost)."""
    items = [i for i in capture_items("generic_api_success.json") if i["status"] == "success"]
    out = [copy.deepcopy(items[k % len(items)]) for k in range(n)]
    for k, item in enumerate(out):
        item["litellm_call_id"] = f"call-{k}"
        item["id"] = f"id-{k}"
    return out


def deep(levels: int) -> object:
    value: object = []
    for _ in range(levels):
        value = [value]
    return value


def deep_text(levels: int) -> str:
    return "[" * levels + "]" * levels


async def post(url: str, body: bytes | str, path: str = EVENTS, **headers: str) -> tuple[int, dict | str]:
    data = body.encode() if isinstance(body, str) else body
    async with aiohttp.ClientSession() as session, session.post(
            url + path, data=data, headers={"Content-Type": "application/json", **headers}) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def metrics(url: str) -> list:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        assert response.status == 200
        return samples(await response.text())


@pytest.fixture
async def server(gatewatch_server):
    gw, url = await gatewatch_server({"rules": []})
    return gw, url


async def assert_counted(url: str, good: list[dict]) -> None:
    """What the route accepted is what Prometheus counted, per attempt and in spend/tokens."""
    rows = await metrics(url)
    assert total(rows, "litellm_deployment_total_requests_total") == len(good)
    assert total(rows, "litellm_deployment_success_responses_total") == len(good)
    assert total(rows, "litellm_spend_metric_total") == pytest.approx(sum(i["response_cost"] for i in good))
    assert total(rows, "litellm_total_tokens_metric_total") == sum(i["total_tokens"] for i in good)
    assert total(rows, "litellm_input_tokens_metric_total") == sum(i["prompt_tokens"] for i in good)
    assert total(rows, "gatewatch_sink_errors_total") == 0


# -- A. deep nesting -----------------------------------------------------------------------
async def test_deep_nesting_in_one_item_rejects_that_item_only(server):
    _gw, url = server
    items = good_items(5)
    bad = items[2]
    body = json.dumps(items).replace(json.dumps(bad["messages"]), deep_text(1500), 1)
    assert deep_text(1500) in body
    status, answer = await post(url, body)
    assert status == 200, answer
    assert answer["accepted"] == 4 and answer["rejected"] == 1
    assert answer["rejected_reasons"] == {"too_deep": 1}
    good = items[:2] + items[3:]
    await assert_counted(url, good)
    rows = await metrics(url)
    assert total(rows, "gatewatch_events_rejected_total", source="callback", reason="too_deep") == 1


@pytest.mark.parametrize("fmt", ["ndjson", "single"])
async def test_deep_nesting_in_ndjson_and_single_bodies(server, fmt):
    _gw, url = server
    items = good_items(3)
    items[1]["messages"] = "PLACEHOLDER"
    lines = [json.dumps(i) for i in items]
    lines[1] = lines[1].replace('"PLACEHOLDER"', deep_text(3000))
    body = "\n".join(lines) if fmt == "ndjson" else lines[1]
    status, answer = await post(url, body)
    assert status == 200, answer
    assert answer["rejected_reasons"] == {"too_deep": 1}
    assert answer["accepted"] == (2 if fmt == "ndjson" else 0)


async def test_deep_nesting_on_the_alert_webhook(server):
    _gw, url = server
    from tests.conftest import load_capture
    good = load_capture("alert_slack_budget_exceeded_1.json")["body_json"]
    body = "[" + json.dumps(good) + ',{"text": ' + deep_text(5000) + "}," + json.dumps(good) + "]"
    status, answer = await post(url, body, "/v1/litellm/alerts")
    assert status == 200, answer
    assert answer["accepted"] == 2 and answer["rejected"] == 1
    status, answer = await post(url, deep_text(5000), "/v1/litellm/alerts")  # an array: one item refused
    assert status == 200 and answer == {"accepted": 0, "rejected": 1}
    status, answer = await post(url, '{"text": ' + deep_text(5000) + "}", "/v1/litellm/alerts")
    assert status == 400 and "too deep" in answer["error"]
    rows = await metrics(url)
    assert total(rows, "gatewatch_events_rejected_total", source="webhook", reason="too_deep") == 2


# -- B/D. numbers at the edge ----------------------------------------------------------------
BAD_NUMBERS = [
    ("response_cost", -0.5),
    ("total_tokens", -3),
    ("prompt_tokens", -1),
    ("response_cost", "NaN"),
    ("response_cost", "Infinity"),
    ("response_cost", "RAW:1" + "0" * 320),
    ("total_tokens", "RAW:1" + "0" * 320),
    ("startTime", "RAW:1e300"),
    ("endTime", "NaN"),
    ("completion_tokens", "12"),
]


@pytest.mark.parametrize(("field", "value"), BAD_NUMBERS, ids=[f"{f}={str(v)[:12]}" for f, v in BAD_NUMBERS])
async def test_one_bad_number_rejects_one_item_and_the_rest_is_counted(server, field, value):
    _gw, url = server
    items = good_items(5)
    items[1][field] = "@@BAD@@"
    body = json.dumps(items)
    raw = value[4:] if isinstance(value, str) and value.startswith("RAW:") else json.dumps(value)
    body = body.replace('"@@BAD@@"', raw)
    status, answer = await post(url, body)
    assert status == 200, answer
    assert answer["accepted"] == 4 and answer["rejected"] == 1, answer
    good = items[:1] + items[2:]
    await assert_counted(url, good)
    rows = await metrics(url)
    for name, _labels, v in rows:
        assert math.isfinite(v) or name.endswith("_bucket") or v == math.inf, name


async def test_nan_ratelimit_header_does_not_reach_a_gauge(server):
    _gw, url = server
    items = good_items(1)
    hidden = items[0].setdefault("hidden_params", {})
    hidden.setdefault("additional_headers", {})["x_ratelimit_remaining_requests"] = "NaN"
    status, answer = await post(url, json.dumps(items))
    assert status == 200 and answer["accepted"] == 1
    rows = await metrics(url)
    assert all(not math.isnan(v) for n, _l, v in rows if n == "litellm_remaining_requests_metric")


# -- H. body-level faults ----------------------------------------------------------------------
@pytest.mark.parametrize("body", ["{not json", "[1, 2", "nope", "{\"a\": 1}\n{oops"])
async def test_a_body_that_is_not_json_is_400(server, body):
    _gw, url = server
    status, answer = await post(url, body)
    if body.count("\n"):  # NDJSON with one good line: the good line is an item, not JSON garbage
        assert status == 200 and answer["rejected"] >= 1
    else:
        assert status == 400, answer
        assert "JSON" in answer["error"]


async def test_gzip_header_on_a_plain_body_is_400(server):
    _gw, url = server
    status, answer = await post(url, json.dumps(good_items(2)), **{"Content-Encoding": "gzip"})
    assert status == 400, answer
    status, answer = await post(url, gzip.compress(json.dumps(good_items(2)).encode()),
                                **{"Content-Encoding": "gzip"})
    assert status == 200 and answer["accepted"] == 2


async def test_sinks_counted_what_was_accepted(server):
    gw, url = server
    items = good_items(6)
    items[3]["response_cost"] = -1
    status, answer = await post(url, json.dumps(items))
    assert status == 200 and answer["accepted"] == 5
    rows = await metrics(url)
    published = gw.pipeline.published
    for sink in gw.pipeline.sinks:
        assert total(rows, "gatewatch_sink_events_total", sink=sink.name) == published, sink.name
    assert total(rows, "gatewatch_events_received_total", source="callback") == 5


# -- C. label length -------------------------------------------------------------------------
async def test_long_label_values_are_cut_and_counted(gatewatch_server):
    _gw, url = await gatewatch_server({"rules": [], "labels": {"max_value_length": 64}})
    items = good_items(50)
    for k, item in enumerate(items):
        item["model_group"] = f"{k:03d}" + "g" * 20000
    body = json.dumps(items)
    status, answer = await post(url, body)
    assert status == 200 and answer["accepted"] == 50
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        page = await response.text()
    assert len(page) < 2_000_000, len(page)  # 50 x 20 KB values would be > 50 MB over the families
    rows = samples(page)
    groups = {labels["model_group"] for n, labels, _ in rows if n == "litellm_deployment_total_requests_total"}
    assert len(groups) == 50
    assert all(len(g) == 64 and g.endswith("…") for g in groups)
    assert total(rows, "gatewatch_label_values_truncated_total", field="model_group") == 50
    assert total(rows, "litellm_deployment_total_requests_total") == 50


# -- H. config errors --------------------------------------------------------------------------
def test_env_values_are_never_echoed_in_config_errors():
    from agent.config import parse_config
    from agent.configtypes import ConfigError

    secret = "xoxb-very-secret-token-1234"
    for data in ({"server": {"port": "${SLACK_TOKEN}"}},
                 {"log_level": "${SLACK_TOKEN}"},
                 {"labels": {"series_limit": "${SLACK_TOKEN}"}},
                 {"otel": {"endpoint": "${SLACK_TOKEN}"}}):
        with pytest.raises(ConfigError) as info:
            parse_config(data, "gw.yaml", env={"SLACK_TOKEN": secret})
        assert secret not in str(info.value), str(info.value)
        assert "${SLACK_TOKEN}" in str(info.value) or "expected" in str(info.value)


def test_the_unknown_key_hint_offers_only_real_keys():
    from agent.config import parse_config
    from agent.configtypes import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config({"sever": {}}, "gw.yaml")
    assert "source_file" not in str(info.value)
    offered = str(info.value).split("expected one of: ")[1].split(", ")
    for key in offered:  # every key the hint offers is accepted
        parse_config({key: None} if key not in ("state_dir", "log_level", "log_format") else {}, "gw.yaml")
    with pytest.raises(ConfigError):
        parse_config({"source_file": "x"}, "gw.yaml")


@pytest.mark.parametrize("stamp", ["1e300", "nan", "-1e300", "inf"])
def test_log_lines_with_absurd_timestamps_get_sane_times(stamp):
    from agent.parse.logs import LogParser

    message = ("No deployment found for model: g, cooldown_list with debug info: [('dep-1', {'exception_received': "
               f"'litellm.RateLimitError: x', 'status_code': '429', 'timestamp': {stamp}, 'cooldown_time': 5}})]")
    events = LogParser(clock=lambda: 1_800_000_000.0).parse(json.dumps({"message": message}))
    assert events and all(e.time == 1_800_000_000.0 for e in events)
    assert all(e.start_time is None or abs(e.start_time) < 1e11 for e in events)


async def test_deep_nesting_on_the_silence_and_alert_apis(gatewatch_server):
    _gw, url = await gatewatch_server({"rules": [], "server": {"allow_unauthenticated_writes": True}, "notify": {
        "receivers": [{"name": "log", "urls": ["json://127.0.0.1:9/x"]}], "route": {"receiver": "log"}}})
    deep_silence = '{"matchers": ' + deep_text(5000) + ', "createdBy": "x", "comment": "y"}'
    status, answer = await post(url, deep_silence, "/api/v1/silences")
    assert status == 400 and "too deep" in answer["error"], answer
    status, answer = await post(url, "[" + deep_text(5000) + "]", "/api/v1/alerts")
    assert status == 400 and "too deep" in answer["error"], answer
    status, answer = await post(url, "{not json", "/api/v1/silences")
    assert status == 400
    async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as response:
        assert response.status == 200


# -- invalid UTF-8 (found by the fuzz suite: a flipped byte in a key made msgspec raise
# UnicodeDecodeError, which no decode path caught: 500, the batch lost) ------------------------
@pytest.mark.parametrize("fmt", ["array", "ndjson"])
async def test_invalid_utf8_in_one_item_rejects_that_item_only(server, fmt):
    _gw, url = server
    items = good_items(3)
    lines = [json.dumps(i).encode() for i in items]
    lines[1] = lines[1].replace(b'"model_group": "', b'"model_group": "\xb9', 1)  # not UTF-8: not JSON text
    assert b"\xb9" in lines[1]
    body = b"[" + b", ".join(lines) + b"]" if fmt == "array" else b"\n".join(lines)
    status, answer = await post(url, body)
    assert status == 200, answer
    assert (answer["accepted"], answer["rejected"], answer["rejected_reasons"]) == (2, 1, {"invalid_json": 1})
    await assert_counted(url, [items[0], items[2]])


async def test_invalid_utf8_alone_is_a_400_and_on_the_alert_webhook_too(server):
    _gw, url = server
    status, _answer = await post(url, b'{"model_group": "\xb9"}')
    assert status == 400
    status, _answer = await post(url, b'{"event": "budget_crossed", "\xb9": "\xb9"}', "/v1/litellm/alerts")
    assert status == 400


def test_invalid_utf8_log_line_is_unparsed_not_a_crash():
    from agent.parse.logs import LogParser

    parser = LogParser()
    assert parser.parse(b'{"message": "\xb9 litellm", "level": "INFO"}') == []
    assert parser.parse_many([b"{\"\xb9\": 1}", b"{\"message\": \"ok\"}"]) == []


@pytest.mark.parametrize("reset", ["10" * 200, "1e400", '"1e400"', '"' + "9" * 400 + 's"', '{"a": 1}'])
async def test_absurd_ratelimit_reset_header_rejects_nothing_and_counts_everything(server, reset):
    """Found by the fuzz suite: an integer past 1e308 in `x_ratelimit_reset_requests` raised
    OverflowError in the reset parser, which no decode path caught (500, batch lost)."""
    _gw, url = server
    items = good_items(3)
    items[1].setdefault("hidden_params", {}).setdefault("additional_headers", {})
    items[1]["hidden_params"]["additional_headers"]["x_ratelimit_reset_requests"] = "RESET"
    body = json.dumps(items).replace('"RESET"', reset)
    status, answer = await post(url, body)
    assert status == 200, answer
    assert answer["accepted"] + answer["rejected"] == 3
    await assert_counted(url, [i for n, i in enumerate(items) if n != 1 or answer["accepted"] == 3])
