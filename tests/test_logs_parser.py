"""LiteLLM log lines -> events, checked against the captured 1.108.7 logs.

Expected values are computed from the fixture lines themselves (or from LiteLLM's own
/metrics capture), not typed in.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from agent.events import Kind
from agent.parse.logpatterns import DISPATCH_CHARS, EXCEPTION_STATUS, PATTERNS
from agent.parse.logs import LogParser, error_class_of
from tests.conftest import FIXTURES, capture_items
from tests.promtext import samples, total

LOG_FILES = sorted(FIXTURES.glob("logs_*.jsonl"))
FALLBACKS_FAILED = "litellm.router.py::async_function_with_fallbacks() - Error occurred while trying to do fallbacks"


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def parse_file(path: Path, parser: LogParser | None = None) -> list:
    parser = parser or LogParser(clock=lambda: 1_000.0)
    events = []
    for line in path.read_bytes().splitlines():
        events.extend(parser.parse(line))
    return events


def cooldown_entries_in(path: Path) -> set[tuple[str, float, str, float]]:
    """(deployment, started, status, cooldown_time) of every cooldown the debug lists mention."""
    found = set()
    for rec in records(path):
        message = rec["message"]
        for marker in ("Cooldown Deployments=", "cooldown_list with debug info: "):
            if marker in message:
                for dep, info in ast.literal_eval(message.split(marker, 1)[1]):
                    found.add((dep, info["timestamp"], info["status_code"], info["cooldown_time"]))
    return found


def litellm_cooled_down() -> dict[tuple[str, str], float]:
    """LiteLLM's own litellm_deployment_cooled_down_total after all scenarios."""
    rows = samples((FIXTURES / "prometheus_metrics.txt").read_text())
    return {(labels["model_id"], labels["exception_status"]): value for name, labels, value in rows
            if name == "litellm_deployment_cooled_down_total"}


def test_every_pattern_is_versioned_and_dispatchable():
    for pattern in PATTERNS:
        assert pattern.seen_on, pattern.name
        assert len(pattern.prefix) >= DISPATCH_CHARS, pattern.name
        assert hasattr(LogParser, "_on_" + pattern.name)
    assert len({p.name for p in PATTERNS}) == len(PATTERNS)


def test_cooldowns_match_litellm_own_counter():
    """All fixtures as one stream: one COOLDOWN per (deployment, start), as LiteLLM counted them."""
    parser = LogParser(clock=lambda: 1_000.0)
    events = [e for path in LOG_FILES for e in parse_file(path, parser) if e.kind == Kind.COOLDOWN]
    ours = Counter((e.deployment, e.status_code) for e in events)
    assert ours == Counter(litellm_cooled_down())
    assert len(ours) == 3  # the three gpt-lab deployments of the no_deployments scenario


def test_no_deployments_fixture_ids_counts_and_values():
    path = FIXTURES / "logs_no_deployments.jsonl"
    events = parse_file(path)
    expected = cooldown_entries_in(path)
    cooldowns = [e for e in events if e.kind == Kind.COOLDOWN]
    assert {(e.deployment, e.start_time, e.status_code, e.value) for e in cooldowns} == \
        {(d, ts, status, float(ct)) for d, ts, status, ct in expected}
    assert len(cooldowns) == len(expected)  # repeated debug lists are not counted again
    for event in cooldowns:
        assert event.model_group == "gpt-lab"  # learnt from the router's "Selected deployment" lines
        assert event.rate_limited and event.error_class == "RateLimitError"

    refused = [r["message"] for r in records(path)
               if r["message"].startswith(FALLBACKS_FAILED) and "No deployments available for selected model" in
               r["message"]]
    no_dep = [e for e in events if e.kind == Kind.NO_DEPLOYMENTS]
    assert len(no_dep) == len(refused) > 0
    # the callbacks of the same scenario report the same refused requests
    callbacks = [item for item in capture_items("generic_api_no_deployments.json") if item["status"] == "failure"
                 and (item.get("error_information") or {}).get("error_class") == "RouterRateLimitError"]
    assert len(callbacks) == len(no_dep)
    assert {c["model_group"] for c in callbacks} == {e.model_group for e in no_dep}
    for event, message in zip(no_dep, refused, strict=True):
        listed = re.search(r"cooldown_list=(\[[^\]]*\])", message).group(1)
        assert event.attrs["cooldown_list"] == ast.literal_eval(listed)
        assert event.model_group == re.search(r"Passed model=(.+?)\. pre-call", message).group(1)
        assert event.value == float(re.search(r"Try again in (\d+) seconds", message).group(1))
        assert event.status_code == "429"


def sequential_attempt_failures(path: Path) -> list[tuple[str, str]]:
    """(deployment, exception class) of each failed attempt, by the last selection before it
    (valid for the sequential fixture scenarios)."""
    out, selected = [], None
    for rec in records(path):
        message = rec["message"]
        if "Selected deployment: " in message:
            selected = re.search(r"'id': '([^']+)'", message).group(1)
        elif message.startswith("litellm.acompletion(model=") and "Exception" in message \
                and not message.startswith("litellm.acompletion(model=None)"):
            out.append((selected, re.search(r"Exception litellm\.(\w+)", message).group(1)))
            selected = None
    return out


@pytest.mark.parametrize("name", ["logs_cooldown.jsonl", "logs_retry_then_success.jsonl", "logs_upstream_429.jsonl",
                                  "logs_bedrock_throttled.jsonl", "logs_fallback.jsonl"])
def test_failed_attempts_are_attributed_to_the_selected_deployment(name):
    path = FIXTURES / name
    expected = sequential_attempt_failures(path)
    states = [e for e in parse_file(path) if e.kind == Kind.DEPLOYMENT_STATE]
    assert [(e.deployment, e.error_class) for e in states] == expected
    assert expected  # the fixture does have failed attempts
    for event in states:
        assert event.value == 1.0 and event.status == "failure" and event.source == "log"
        assert event.status_code == EXCEPTION_STATUS[event.error_class]
        assert event.model_group and event.api_base


def test_cooldown_fixture_reports_the_failing_account_only():
    events = parse_file(FIXTURES / "logs_cooldown.jsonl")
    assert {e.deployment for e in events if e.kind == Kind.DEPLOYMENT_STATE} == {"gpt-lab-acct222-euw1"}
    assert not [e for e in events if e.kind == Kind.COOLDOWN]  # no cooldown list in this capture


def test_retries_equal_what_litellm_reported():
    for path in LOG_FILES:
        expected = [int(m) for r in records(path) if r["message"].startswith(FALLBACKS_FAILED)
                    for m in re.findall(r"LiteLLM Retried: (\d+) times", r["message"])]
        retries = [e for e in parse_file(path) if e.kind == Kind.RETRY]
        assert [int(e.value) for e in retries] == [n for n in expected if n > 0], path.name
        for event in retries:
            assert event.model_group and event.status == "failure" and event.source == "log"


def test_timeout_retry_has_408():
    retries = [e for e in parse_file(FIXTURES / "logs_timeout.jsonl") if e.kind == Kind.RETRY]
    assert [(e.model_group, e.status_code, e.error_class) for e in retries] == [("hang-model", "408", "Timeout")]


def test_successful_fallback_is_left_to_the_callback():
    """The recovered request is a callback event with x-litellm-attempted-fallbacks: the log
    line only closes the pending fallback, so a later failure is not taken for its failure."""
    parser = LogParser(clock=lambda: 1_000.0)
    events = parse_file(FIXTURES / "logs_fallback.jsonl", parser) + \
        parse_file(FIXTURES / "logs_upstream_500.jsonl", parser)
    assert [e for e in events if e.kind == Kind.FALLBACK] == []
    assert parser.fallbacks_recovered == 1
    items = capture_items("generic_api_fallback.json") + capture_items("generic_api_fallback_2.json")
    recovered = [item for item in items if item["status"] == "success"
                 and (item["hidden_params"].get("additional_headers") or {}).get("x-litellm-attempted-fallbacks")]
    assert len(recovered) == parser.fallbacks_recovered


def test_failed_fallback_names_both_groups():
    lines = [r for r in records(FIXTURES / "logs_fallback.jsonl")
             if not r["message"].startswith("Successful fallback")]  # the fallback group failed too ...
    lines += [r for r in records(FIXTURES / "logs_upstream_500.jsonl") if r["message"].startswith(FALLBACKS_FAILED)]
    parser = LogParser()
    events = [e for rec in lines for e in parser.parse(json.dumps(rec))]
    (fallback,) = [e for e in events if e.kind == Kind.FALLBACK]
    target = next(re.search(r"model_group = (\S+)", r["message"]).group(1) for r in lines
                  if r["message"].startswith("Falling back to model_group"))
    failed_group = {e.model_group for e in events if e.kind == Kind.DEPLOYMENT_STATE}
    assert (fallback.status, fallback.attrs["fallback_model"], fallback.status_code) == ("failure", target, "500")
    assert {fallback.requested_model} == failed_group == {"error-model"}


def test_budget_exceeded_names_the_deployment():
    path = FIXTURES / "logs_budget_exceeded.jsonl"
    messages = [r["message"] for r in records(path) if r["message"].startswith(FALLBACKS_FAILED)
                and "crossed budget" in r["message"]]
    budget = [e for e in parse_file(path) if e.kind == Kind.BUDGET]
    assert len(budget) == len(messages) > 0
    for event, message in zip(budget, messages, strict=True):
        found = re.search(r"model_id: (\S+): ([0-9.]+) >= (\S+)", message)
        assert event.deployment == found.group(1)
        assert event.value == pytest.approx(float(found.group(2)))
        assert event.attrs == {"alert_type": "deployment_budget_exceeded", "budget_period": found.group(3)}
        assert event.model_group == "budget-model"
    # LiteLLM's own bug-report hint after each refusal is a proxy error, with the exception class
    errors = [e for e in parse_file(path) if e.kind == Kind.PROXY_ERROR]
    assert len(errors) == sum("This looks like a bug in LiteLLM" in r["message"] for r in records(path))
    assert {e.error_class for e in errors} == {"ValueError"}


def test_asgi_exception_is_a_proxy_error():
    path = FIXTURES / "logs_health.jsonl"
    errors = [e for e in parse_file(path) if e.kind == Kind.PROXY_ERROR]
    assert len(errors) == sum(r["message"].startswith("Exception in ASGI application") for r in records(path)) == 1
    assert errors[0].attrs["error"] == "asgi_exception"


def test_asgi_exception_class_from_the_stacktrace():
    line = json.dumps({"message": "Exception in ASGI application\n", "level": "ERROR", "logger": "h11_impl.py:416",
                       "stacktrace": "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                                     "pydantic_core._pydantic_core.ValidationError: 1 validation error\n  field"})
    (event,) = LogParser().parse(line)
    assert event.error_class == "ValidationError"


def test_startup_banner_is_counted_not_fatal():
    path = FIXTURES / "logs_startup.txt"
    parser = LogParser()
    assert parse_file(path, parser) == []
    raw = [line.strip() for line in path.read_text().splitlines()]
    expected_unparsed = sum(1 for line in raw if line and not line.startswith("{"))
    assert parser.unparsed == expected_unparsed
    assert parser.lines == len(path.read_bytes().splitlines())


def plain(rec: dict, colour: bool = False) -> str:
    """The same record in LiteLLM's plain-text format (JSON_LOGS off)."""
    prefix = f"{rec['timestamp'][11:19]} - {rec['component']}:{rec['level']}"
    if colour:
        prefix = f"\x1b[92m{prefix}\x1b[0m"
    return f"{prefix}: {rec['logger']} - {rec['message']}"


def summary(events):
    return [(e.kind, e.deployment, e.model_group, e.status_code, e.attrs.get("fallback_model")) for e in events]


@pytest.mark.parametrize("name", ["logs_cooldown.jsonl", "logs_fallback.jsonl", "logs_upstream_429.jsonl"])
@pytest.mark.parametrize("wrap", ["plain", "plain_colour", "docker", "cri"])
def test_other_line_formats_give_the_same_events(name, wrap):
    path = FIXTURES / name
    expected = summary(parse_file(path))
    parser = LogParser(clock=lambda: 1_000.0)
    events, continuation = [], 0
    for rec, raw in zip(records(path), path.read_text().splitlines(), strict=True):
        if wrap.startswith("plain"):
            lines = plain(rec, colour=wrap == "plain_colour").split("\n")  # what a terminal log really holds
            continuation += sum(1 for line in lines[1:] if line.strip())
        elif wrap == "docker":
            lines = [json.dumps({"log": raw + "\n", "stream": "stdout", "time": rec["timestamp"] + "Z"})]
        else:
            lines = [f"{rec['timestamp']}Z stdout F {raw}"]
        for line in lines:
            events.extend(parser.parse(line.encode()))
    if wrap.startswith("plain"):
        # the retry count sits on a continuation line of a multi-line message: JSON logs only
        expected = [e for e in expected if e[0] != Kind.RETRY]
    assert summary(events) == expected
    assert parser.unparsed == continuation


def test_garbage_is_counted_never_raised():
    parser = LogParser()
    unparsed = [b"\x00\xff\xfe binary", b"{\"message\": \"litellm.acompletion(model=", b"[1, 2, 3]",
                b"\xc3\x28 invalid utf8", "\u00e9\u00e8 unicode".encode(), b"x" * 1_000_000]
    harmless = [b"{}", b"{\"message\": 42}", b"   ", b"",
                b"{\"message\": \"get_available_deployment for model: m, Selected deployment: {'no': 'id'}\"}",
                b"{\"message\": \"litellm.acompletion(model=openai/x)\\u001b[31m Exception \"}"]
    for line in unparsed + harmless:
        assert parser.parse(line) == []
    assert parser.lines == len(unparsed) + len(harmless)
    assert parser.unparsed == len(unparsed)


def test_cut_cooldown_list_still_yields_entries():
    message = ("No deployment found for model: g, cooldown_list with debug info: [('dep-1', {'exception_received': "
               "'litellm.RateLimitError: x', 'status_code': '429', 'timestamp': 17.5, 'cooldown_time': 5}), "
               "('dep-2', {'exception_received': 'litellm.InternalServerError: y', 'status_code': '500', 'timest")
    events = LogParser().parse(json.dumps({"message": message}))
    assert [(e.deployment, e.status_code, e.start_time, e.value) for e in events] == \
        [("dep-1", "429", 17.5, 5.0), ("dep-2", "500", None, None)]


def test_concurrent_selections_of_one_model_are_not_guessed():
    def selected(dep):
        body = f"{{'model_name': 'g', 'litellm_params': {{'model': 'openai/m'}}, 'model_info': {{'id': '{dep}'}}}}"
        message = f"get_available_deployment for model: g, Selected deployment: {body} for model: g"
        return json.dumps({"message": message})

    failed = json.dumps({"message": "litellm.acompletion(model=openai/m)\x1b[31m Exception litellm.RateLimitError: "
                                    "slow down\x1b[0m"})
    parser = LogParser()
    events = [e for line in (selected("a"), selected("b"), failed, failed) for e in parser.parse(line)]
    assert events == [] and parser.unattributed_attempts == 2  # either call may have ended first
    events = [e for line in (selected("a"), selected("a"), failed, failed) for e in parser.parse(line)]
    assert [(e.deployment, e.status_code) for e in events] == [("a", "429"), ("a", "429")]
    # after an ambiguous outcome the queue is not trusted until it runs empty
    lines = (selected("a"), selected("b"), selected("b"), failed, failed, failed, selected("b"), failed)
    events = [e for line in lines for e in parser.parse(line)]
    assert [e.deployment for e in events] == ["b"]


def test_error_class_and_status_table():
    assert error_class_of("litellm.ContextWindowExceededError: litellm.BadRequestError: x") == \
        "ContextWindowExceededError"
    assert error_class_of("litellm.Timeout: APITimeoutError - Request timed out") == "Timeout"
    assert EXCEPTION_STATUS["ServiceUnavailableError"] == "503"


def test_replay_cli_turns_logs_into_metrics(capsys):
    from agent.cli import main

    path = FIXTURES / "logs_no_deployments.jsonl"
    assert main(["replay", str(path)]) == 0
    text = capsys.readouterr().out
    for (model_id, status), count in litellm_cooled_down().items():
        assert total(text, "litellm_deployment_cooled_down_total", model_id=model_id,
                     exception_status=status) == count
        assert total(text, "litellm_deployment_state", model_id=model_id) == 2  # in cooldown
    refused = sum(r["message"].startswith(FALLBACKS_FAILED) and "No deployments available for selected" in
                  r["message"] for r in records(path))
    assert refused > 0
    # the refusal is counted from the callback; the log line alone adds no count ...
    assert total(text, "gatewatch_no_deployments_available_total") == 0
    # ... so with both sources, as a sidecar sees them, each refusal counts once
    assert main(["replay", str(path), str(FIXTURES / "generic_api_no_deployments.json")]) == 0
    both = capsys.readouterr().out
    assert total(both, "gatewatch_no_deployments_available_total", model_group="gpt-lab") == refused
    retried = sum(int(n) for r in records(path) if r["message"].startswith(FALLBACKS_FAILED)
                  for n in re.findall(r"LiteLLM Retried: (\d+)", r["message"]))
    assert total(text, "gatewatch_deployment_retries_total", source="log") == retried
