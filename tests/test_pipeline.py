"""Attempts -> requests: the merge of a failed attempt with its later success."""

from __future__ import annotations

import json

from agent.enrich import Catalog, Enricher
from agent.events import Event, Kind
from agent.parse.litellm import decode_body
from agent.pipeline import Pipeline, RequestTracker
from tests.conftest import capture_items


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Collect:
    name = "collect"

    def __init__(self) -> None:
        self.events: list[Event] = []

    def handle(self, events):
        self.events.extend(events)

    async def start(self):
        return None

    async def stop(self, deadline):
        return None


class Broken(Collect):
    name = "broken"

    def handle(self, events):
        raise RuntimeError("boom")


def build(window: float = 30.0):
    clock = Clock()
    sink = Collect()
    pipeline = Pipeline(Enricher(Catalog()), RequestTracker(window, clock=clock), [Broken(), sink])
    errors = []
    pipeline.on_sink_error = lambda name, _n: errors.append(name)
    return pipeline, sink, clock, errors


def events(name: str) -> list[Event]:
    return decode_body(json.dumps(capture_items(name)).encode()).events


def outcomes(sink: Collect) -> list[Event]:
    return [e for e in sink.events if e.kind == Kind.OUTCOME]


def test_recovered_request_is_one_success_and_a_broken_sink_hurts_no_one():
    pipeline, sink, clock, errors = build()
    failure, success, *rest = events("generic_api_retry_then_success.json")
    pipeline.publish([failure])
    assert outcomes(sink) == []  # held: a retry may still succeed
    pipeline.publish([success, *rest])
    done = outcomes(sink)
    assert [e.status for e in done] == ["success"] * (1 + len(rest))
    clock.now += 3600
    pipeline.tick()
    assert len(outcomes(sink)) == 1 + len(rest)  # the held failure never becomes a request
    assert errors and set(errors) == {"broken"}


def test_failure_without_recovery_counts_after_the_window():
    pipeline, sink, clock, _ = build(window=30)
    failed = events("generic_api_upstream_500.json")
    pipeline.publish(failed)
    clock.now += 29
    pipeline.tick()
    assert outcomes(sink) == []
    clock.now += 2
    pipeline.tick()
    assert [e.status for e in outcomes(sink)] == ["failure"]
    assert outcomes(sink)[0].status_code == "500"


def test_fallback_counts_under_the_group_that_served_and_remembers_the_one_asked_for():
    """LiteLLM counts a request rescued by a fallback under the group that served it; the group
    asked for goes to litellm_deployment_successful_fallbacks and the trace."""
    pipeline, sink, _clock, _ = build()
    pipeline.publish(events("generic_api_fallback.json"))
    pipeline.publish(events("generic_api_fallback_2.json"))
    (outcome,) = outcomes(sink)
    assert outcome.requested_model == "gpt-lab" and outcome.model_group == "gpt-lab"
    assert outcome.attrs["fallback_from_group"] == "error-model"
    assert outcome.attrs["fallback_from_status"] == "500"


def test_flush_releases_everything_and_health_checks_make_no_requests():
    pipeline, sink, _clock, _ = build()
    pipeline.publish(events("generic_api_health.json"))
    pipeline.publish(events("generic_api_outage.json"))
    pipeline.flush()
    assert len(outcomes(sink)) == len(events("generic_api_outage.json"))
    assert all(not e.health_check for e in outcomes(sink))


def test_pending_is_bounded():
    tracker = RequestTracker(60, max_pending=2, clock=Clock())
    out: list[Event] = []
    for n in range(5):
        tracker.observe(Event(kind=Kind.REQUEST, time=0, status="failure", call_id=f"c{n}"), out)
    assert len(tracker) == 2 and [e.call_id for e in out] == ["c0", "c1", "c2"]
