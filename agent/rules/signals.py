"""What a rule can measure: signal name -> which events it reads and the number it takes.

One table, used by validation (which aggregates make sense), by the evaluator (hot-path
extraction) and by the Prometheus export (which metric carries the same number). Extract
functions return None for an event that says nothing about the signal, so a window only
ever holds relevant values. LiteLLM's own /health traffic never reaches a signal: the
engine drops health-check events before extraction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from agent.events import NO_HEALTHY_DEPLOYMENTS, ROUTER_RATE_LIMIT, Event, Kind

# histogram boundaries for percentile windows, per unit (rule thresholds are added to them)
SECONDS_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0,
                  7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 420.0, 600.0)
RATE_BOUNDS = (1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 75.0, 100.0, 150.0, 200.0,
               300.0, 500.0, 1000.0)
RATIO_BOUNDS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def _one_two_five(low_exp: int, high_exp: int) -> tuple[float, ...]:
    return tuple(m * 10.0**e for e in range(low_exp, high_exp + 1) for m in (1.0, 2.0, 5.0))


GENERIC_BOUNDS = _one_two_five(-6, 6)

WINDOWED = ("count", "sum", "avg", "ratio", "min", "max", "rate", "last", "absent")
ALL_AGGREGATES = (*WINDOWED, "consecutive", "pNN")


@dataclass(frozen=True)
class Signal:
    name: str
    kinds: frozenset[str]
    extract: Callable[[Event], float | None]
    unit: str = ""
    bounds: tuple[float, ...] = GENERIC_BOUNDS
    default_aggregate: str = "sum"
    # hit (True) / reset (False) / irrelevant (None): for `consecutive`
    outcome: Callable[[Event], bool | None] | None = None
    percentiles: bool = True
    quota: bool = False  # global by default (budget and quota rules)
    derived: str = ""  # "quota_utilization": computed from the window and the catalog at evaluation
    # for readings that go stale (provider rate-limit headers): seconds the event's reading stays
    # true (its reset header), -1 when it names none (then rule_engine.header_max_age), None when the
    # event has no reading; present exactly where `extract` is. See agent/rules/freshness.py.
    expires: Callable[[Event], float | None] | None = None
    doc: str = ""

    def allows(self, aggregate: str) -> bool:
        if self.derived:
            return aggregate == "ratio"
        if aggregate == "consecutive":
            return self.outcome is not None
        if aggregate.startswith("p"):
            return self.percentiles
        return aggregate in WINDOWED


def is_no_deployments(e: Event) -> bool:
    """LiteLLM's "No deployments available" (every deployment of the group in cooldown)."""
    return e.status != "success" and (e.normalized_error == NO_HEALTHY_DEPLOYMENTS
                                      or e.error_class == ROUTER_RATE_LIMIT)


def _refused(e: Event) -> float | None:
    # counted once, from the callback (Event.is_no_deployments); the log line of the same
    # refusal (Kind.NO_DEPLOYMENTS) is detail, not a second count
    return 1.0 if e.is_no_deployments else None


def _requests(e: Event) -> float | None:
    return 1.0


def _errors(e: Event) -> float | None:
    return 1.0 if e.status != "success" else None


def _error_outcome(e: Event) -> bool | None:
    return e.status != "success"


def _error_ratio(e: Event) -> float | None:
    return 1.0 if e.status != "success" else 0.0


def _throttled(e: Event) -> bool:
    return e.rate_limited and not is_no_deployments(e)


def _rate_limited(e: Event) -> float | None:
    return 1.0 if _throttled(e) else None


def _rate_limited_outcome(e: Event) -> bool | None:
    if _throttled(e):
        return True
    return False if e.status == "success" else None


def _rate_limited_ratio(e: Event) -> float | None:
    if is_no_deployments(e):
        return None
    return 1.0 if e.rate_limited else 0.0


def _latency(e: Event) -> float | None:
    return e.latency


def _ttft(e: Event) -> float | None:
    return e.ttft


def _tokens_per_second(e: Event) -> float | None:
    if e.status != "success" or e.output_tokens <= 0 or not e.latency:
        return None
    generation = e.latency - e.ttft if e.ttft is not None and e.latency > e.ttft else e.latency
    return e.output_tokens / generation if generation > 0 else None


def _success_field(name: str) -> Callable[[Event], float | None]:
    def extract(e: Event) -> float | None:
        return float(getattr(e, name)) if e.status == "success" else None

    extract.__name__ = f"_{name}"
    return extract


def _retries(e: Event) -> float | None:
    if e.kind == Kind.RETRY:
        return e.value if e.value is not None else 1.0
    return float(e.retries) if e.retries > 0 and e.status == "success" else None


def _fallbacks(e: Event) -> float | None:
    if e.kind == Kind.FALLBACK:
        return 1.0
    return float(e.fallbacks) if e.fallbacks > 0 and e.status == "success" else None


def _one(e: Event) -> float | None:
    return 1.0


def _value(e: Event) -> float | None:
    return e.value


def _proxy_down_seconds(e: Event) -> float | None:
    if e.value is None:
        return None
    if e.value >= 1:
        return 0.0
    down = e.attrs.get("down_for")
    return float(down) if isinstance(down, (int, float)) else 0.0


def _litellm_budget_alert(e: Event) -> float | None:
    # LiteLLM's structured WebhookEvent (alerting: ["webhook"]): the spend it reports
    if e.source != "webhook" or e.attrs.get("format") != "webhook_event":
        return None
    return e.value if e.value is not None else 0.0


def _litellm_alert(e: Event) -> float | None:
    # a slack-format alert body LiteLLM sent (outage_alerts, llm_too_slow, db_exceptions, ...)
    if e.source != "webhook" or e.attrs.get("format") != "slack":
        return None
    return e.value if e.value is not None else 1.0


def _remaining_requests(e: Event) -> float | None:
    return e.remaining_requests


def _remaining_tokens(e: Event) -> float | None:
    return e.remaining_tokens


def _remaining_requests_ratio(e: Event) -> float | None:
    if e.remaining_requests is None or not e.limit_requests:
        return None
    return e.remaining_requests / e.limit_requests


def _remaining_tokens_ratio(e: Event) -> float | None:
    if e.remaining_tokens is None or not e.limit_tokens:
        return None
    return e.remaining_tokens / e.limit_tokens


def _valid_for(extract: Callable[[Event], float | None], reset: str) -> Callable[[Event], float | None]:
    get = attrgetter(reset)

    def expires(e: Event) -> float | None:
        if extract(e) is None:
            return None
        seconds = get(e)
        return -1.0 if seconds is None else seconds

    expires.__name__ = f"_valid_for_{extract.__name__}"
    return expires


def _quota_tokens(e: Event) -> float | None:
    if is_no_deployments(e) or not e.deployment:
        return None
    return float(e.total_tokens)


def _bedrock_quota_utilization(e: Event) -> float | None:
    return None if "unmatched" in e.attrs else e.value


def _bedrock_quota_exhaustion(e: Event) -> float | None:
    minutes = e.attrs.get("exhaustion_minutes")
    return float(minutes) if minutes is not None else None


def _bedrock_quota_unmatched(e: Event) -> float | None:
    return 1.0 if "unmatched" in e.attrs else None


def _constant_one(events: Sequence[Event]) -> list[float | None]:
    return [1.0] * len(events)


def _field_many(name: str) -> Callable[[Sequence[Event]], list[Any]]:
    get = attrgetter(name)
    return lambda events: list(map(get, events))


# extract function -> the same function over a list of events (agent/rules/batch.py), where a
# C-level loop beats a Python call per event: constants and plain attributes (measured: a
# comprehension is no faster than calling a small function in Python 3.11). Each must return
# exactly what `list(map(extract, events))` returns (tests/test_rules_batch.py checks them).
BATCH_EXTRACT: dict[Callable[[Event], Any], Callable[[Sequence[Event]], list[Any]]] = {
    _requests: _constant_one,
    _one: _constant_one,
    _latency: _field_many("latency"),
    _ttft: _field_many("ttft"),
    _value: _field_many("value"),
    _remaining_requests: _field_many("remaining_requests"),
    _remaining_tokens: _field_many("remaining_tokens"),
}

_REQ = frozenset({Kind.REQUEST})
_QUOTA = frozenset({Kind.QUOTA})
_OUT = frozenset({Kind.OUTCOME})

SIGNALS: dict[str, Signal] = {
    s.name: s
    for s in (
        Signal("requests", _REQ, _requests, "requests", default_aggregate="count", percentiles=False,
               doc="LLM call attempts (one per deployment attempt)"),
        Signal("errors", _REQ, _errors, "errors", default_aggregate="count", outcome=_error_outcome,
               percentiles=False, doc="failed attempts (LiteLLM reports the first failed attempt of a request)"),
        Signal("error_ratio", _REQ, _error_ratio, "ratio", RATIO_BOUNDS, default_aggregate="avg",
               percentiles=False, doc="failed attempts / attempts"),
        Signal("rate_limited", _REQ, _rate_limited, "requests", default_aggregate="count",
               outcome=_rate_limited_outcome, percentiles=False, quota=True,
               doc="attempts throttled by the provider (429, ThrottlingException); not 'no deployments'"),
        Signal("rate_limited_ratio", _REQ, _rate_limited_ratio, "ratio", RATIO_BOUNDS, default_aggregate="avg",
               percentiles=False, quota=True, doc="throttled attempts / attempts"),
        Signal("latency_seconds", _REQ, _latency, "seconds", SECONDS_BOUNDS, default_aggregate="p95",
               doc="LLM API latency of an attempt"),
        Signal("ttft_seconds", _REQ, _ttft, "seconds", SECONDS_BOUNDS, default_aggregate="p95",
               doc="time to first token (streaming calls)"),
        Signal("output_tokens_per_second", _REQ, _tokens_per_second, "tokens/s", RATE_BOUNDS,
               default_aggregate="p50", doc="output tokens / generation time of a successful call"),
        Signal("tokens_input", _REQ, _success_field("input_tokens"), "tokens", doc="prompt tokens"),
        Signal("tokens_output", _REQ, _success_field("output_tokens"), "tokens", doc="completion tokens"),
        Signal("tokens_total", _REQ, _success_field("total_tokens"), "tokens", doc="prompt + completion tokens"),
        Signal("cost_usd", _REQ, _success_field("cost_usd"), "USD", doc="LiteLLM's response_cost"),
        Signal("retries", frozenset({Kind.REQUEST, Kind.RETRY}), _retries, "retries", percentiles=False,
               doc="router retries (x-litellm-attempted-retries, proxy logs)"),
        Signal("fallbacks", frozenset({Kind.REQUEST, Kind.FALLBACK}), _fallbacks, "fallbacks", percentiles=False,
               doc="fallbacks to another model group"),
        Signal("cooldowns", frozenset({Kind.COOLDOWN}), _one, "cooldowns", default_aggregate="count",
               percentiles=False, doc="deployments put into cooldown by the router (proxy logs)"),
        Signal("no_deployments", frozenset({Kind.REQUEST}), _refused, "requests",
               default_aggregate="count", percentiles=False,
               doc="requests refused because every deployment of the group was in cooldown"),
        Signal("deployment_state", frozenset({Kind.DEPLOYMENT_STATE}), _value, "state", (0.0, 1.0, 2.0),
               default_aggregate="last", percentiles=False,
               doc="deployment health: 0 healthy, 1 partial outage, 2 complete outage"),
        Signal("proxy_up", frozenset({Kind.PROXY_STATE}), _value, "up", (0.0, 1.0), default_aggregate="last",
               percentiles=False, doc="1 when the proxy's health endpoint answers, 0 when not"),
        Signal("proxy_down_seconds", frozenset({Kind.PROXY_STATE}), _proxy_down_seconds, "seconds",
               SECONDS_BOUNDS, default_aggregate="last", percentiles=False,
               doc="seconds since the proxy's health endpoint last answered OK (since the sidecar started "
                   "if it never did); 0 while it answers"),
        Signal("litellm_budget_alert", frozenset({Kind.BUDGET}), _litellm_budget_alert, "USD",
               default_aggregate="last", percentiles=False,
               doc="LiteLLM's budget WebhookEvents (budget_crossed, threshold_crossed, ...): the spend they report"),
        Signal("litellm_alerts", frozenset({Kind.BUDGET, Kind.PROXY_ERROR}), _litellm_alert, "alerts",
               default_aggregate="sum", percentiles=False,
               doc="LiteLLM's slack-format alerts (outage_alerts, cooldown_deployment, llm_too_slow, ...): "
                   "alerts LiteLLM sent, with its [Num Alerts: n] digests counted n times"),
        Signal("proxy_errors", frozenset({Kind.PROXY_ERROR}), _one, "errors", default_aggregate="count",
               percentiles=False, doc="errors in the proxy's logs and LiteLLM alert webhooks"),
        Signal("remaining_requests", _REQ, _remaining_requests, "requests", default_aggregate="min", quota=True,
               expires=_valid_for(_remaining_requests, "reset_requests"),
               doc="provider x-ratelimit-remaining-requests"),
        Signal("remaining_tokens", _REQ, _remaining_tokens, "tokens", default_aggregate="min", quota=True,
               expires=_valid_for(_remaining_tokens, "reset_tokens"),
               doc="provider x-ratelimit-remaining-tokens"),
        Signal("remaining_requests_ratio", _REQ, _remaining_requests_ratio, "ratio", RATIO_BOUNDS,
               default_aggregate="min", quota=True, expires=_valid_for(_remaining_requests_ratio, "reset_requests"),
               doc="remaining / limit requests (provider headers)"),
        Signal("remaining_tokens_ratio", _REQ, _remaining_tokens_ratio, "ratio", RATIO_BOUNDS,
               default_aggregate="min", quota=True, expires=_valid_for(_remaining_tokens_ratio, "reset_tokens"),
               doc="remaining / limit tokens (provider headers)"),
        Signal("quota_utilization", _REQ, _quota_tokens, "ratio", default_aggregate="ratio", percentiles=False,
               quota=True, derived="quota_utilization",
               doc="observed rpm and tpm over the deployment's configured rpm/tpm (the larger of the two)"),
        # computed by agent/quotas from shared counters already: local windows (quota=False) on purpose
        Signal("bedrock_quota_utilization", _QUOTA, _bedrock_quota_utilization, "ratio", RATIO_BOUNDS,
               default_aggregate="last", percentiles=False,
               doc="use of a Bedrock quota (Service Quotas) in the highest fresh view: completed, reserved "
                   "(input + max_tokens) or account (AWS/Bedrock EstimatedTPMQuotaUsage); labels model, quota, "
                   "inference, view, quota_code"),
        Signal("bedrock_quota_exhaustion_minutes", _QUOTA, _bedrock_quota_exhaustion, "minutes",
               default_aggregate="last", percentiles=False,
               doc="minutes until a Bedrock quota reaches 100 % at the slope of the last 5 minutes (absent when "
                   "not rising)"),
        Signal("bedrock_quota_unmatched", _QUOTA, _bedrock_quota_unmatched, "deployments", default_aggregate="last",
               percentiles=False, doc="1 for a Bedrock deployment whose quota could not be matched (attr unmatched)"),
        Signal("outcomes", _OUT, _requests, "requests", default_aggregate="count", percentiles=False,
               doc="client requests after retries and fallbacks"),
        Signal("outcome_errors", _OUT, _errors, "requests", default_aggregate="count", outcome=_error_outcome,
               percentiles=False, doc="client requests that failed after retries and fallbacks"),
        Signal("outcome_error_ratio", _OUT, _error_ratio, "ratio", RATIO_BOUNDS, default_aggregate="avg",
               percentiles=False, doc="failed client requests / client requests"),
    )
}

BUDGET_SIGNALS = ("cost_usd", "tokens_input", "tokens_output", "tokens_total", "requests")


def parse_quantile(aggregate: str) -> float | None:
    """'p95' -> 0.95, 'p99.9' -> 0.999; None when not a percentile."""
    if len(aggregate) < 2 or aggregate[0] != "p":
        return None
    try:
        value = float(aggregate[1:])
    except ValueError:
        return None
    if not 0 < value < 100:
        return None
    return value / 100.0
