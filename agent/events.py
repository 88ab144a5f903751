"""The one normalized event type that sits between sources and sinks.

Sources (callbacks, log tail, health poller) produce `Event`s; sinks (Prometheus,
OpenTelemetry, CloudWatch, rule windows) only ever read them. Keeping a single flat,
slotted type makes the hot path cheap and lets every sink and rule use the same names.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass, field
from typing import Any


class Kind:
    """Event kinds. Plain strings (not an Enum) so comparisons on the hot path are cheap."""

    REQUEST = "request"  # one LLM call attempt as LiteLLM reported it (deployment level)
    OUTCOME = "outcome"  # the final result of one proxy HTTP request (merged by litellm_call_id)
    RETRY = "retry"  # a retry seen in the proxy logs
    COOLDOWN = "cooldown"  # a deployment put into cooldown
    NO_DEPLOYMENTS = "no_deployments"  # every deployment of a model group in cooldown
    FALLBACK = "fallback"  # fallback attempt seen in the logs (status says success/failure)
    DEPLOYMENT_STATE = "deployment_state"  # health of one deployment (value: 0 ok, 1 partial, 2 down)
    PROXY_STATE = "proxy_state"  # the proxy itself up (value 1) or down (value 0)
    BUDGET = "budget"  # a budget / spend webhook from LiteLLM
    PROXY_ERROR = "proxy_error"  # an error line in the proxy's logs (ASGI exception, ...)
    SELF = "self"  # gatewatch's own signals (tail lag, ...), for local rules
    QUOTA = "quota"  # Bedrock quota headroom of one account/region/model/quota (agent/quotas), value: utilization

    ALL = (
        REQUEST,
        OUTCOME,
        RETRY,
        COOLDOWN,
        NO_DEPLOYMENTS,
        FALLBACK,
        DEPLOYMENT_STATE,
        PROXY_STATE,
        BUDGET,
        PROXY_ERROR,
        SELF,
        QUOTA,
    )


UNKNOWN = "unknown"
NO_HEALTHY_DEPLOYMENTS = "429_NO_HEALTHY_DEPLOYMENTS"
ROUTER_RATE_LIMIT = "RouterRateLimitError"


@dataclass(slots=True)
class Event:
    """One normalized observation. Unset fields keep their defaults.

    Times are epoch seconds (float). Durations are seconds. `deployment` is LiteLLM's
    `model_info.id` (`model_id` in LiteLLM's own metrics).
    """

    kind: str
    time: float  # when it ended / was observed
    start_time: float | None = None
    source: str = "callback"  # callback | log | health | webhook | replay

    # what was called
    model: str = ""  # the provider model, e.g. "fake-ok" or "anthropic.claude-3-haiku..."
    model_group: str = ""  # LiteLLM model_name (the public name clients ask for)
    requested_model: str = ""  # the model group the client asked for (differs after a fallback)
    deployment: str = ""  # model_info.id
    api_provider: str = ""  # openai, bedrock, azure, ...
    api_base: str = ""
    aws_account: str = UNKNOWN
    aws_region: str = UNKNOWN
    call_type: str = ""
    stream: bool = False
    cache_hit: bool = False

    # outcome
    status: str = "success"  # success | failure
    status_code: str = "200"
    error_class: str = ""
    error_provider: str = ""  # the provider the exception names (LiteLLM's exception_class prefix)
    error_code: str = ""
    normalized_error: str = ""
    error_message: str = ""
    rate_limited: bool = False
    health_check: bool = False  # LiteLLM's own /health traffic

    # timing (seconds)
    latency: float | None = None  # LLM API latency (end - start of the attempt)
    total_latency: float | None = None  # whole request as the proxy saw it
    ttft: float | None = None  # only for real streaming calls
    overhead: float | None = None  # LiteLLM's own overhead
    queue_time: float | None = None

    # usage
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    max_tokens: int | None = None  # the request's max_tokens / max_completion_tokens (model parameters)

    # router behaviour
    retries: int = 0  # x-litellm-attempted-retries on the final success
    fallbacks: int = 0  # x-litellm-attempted-fallbacks
    remaining_requests: float | None = None
    remaining_tokens: float | None = None
    limit_requests: float | None = None
    limit_tokens: float | None = None
    # seconds after `time` until the provider's window resets (x-ratelimit-reset-*): a remaining
    # reading says nothing once its window has reset (agent/rules/freshness.py)
    reset_requests: float | None = None
    reset_tokens: float | None = None

    # who
    key_hash: str = ""
    key_alias: str = ""
    team: str = ""
    team_alias: str = ""
    user: str = ""
    end_user: str = ""
    user_email: str = ""
    org_id: str = ""
    org_alias: str = ""
    client_ip: str = ""
    user_agent: str = ""
    route: str = ""
    tags: tuple[str, ...] = ()

    # identity, for traces and merging
    call_id: str = ""
    trace_id: str = ""
    response_id: str = ""
    response_model: str = ""
    finish_reasons: tuple[str, ...] = ()
    traceparent: str = ""

    # generic value for non-request kinds (cooldown seconds, deployment state, budget spend...)
    value: float | None = None
    # content: only filled when content capture is configured (never by default)
    input_messages: Any = None
    output_messages: Any = None
    # anything else a source wants to pass on (small; never on the hot path)
    attrs: dict[str, Any] = field(default_factory=dict)

    def copy(self, **changes: Any) -> Event:
        """A shallow copy; ~6x cheaper than dataclasses.replace (this is on the hot path)."""
        new = Event(*_all_fields(self))
        for name, value in changes.items():
            setattr(new, name, value)
        return new

    @property
    def is_failure(self) -> bool:
        return self.status != "success"

    @property
    def is_no_deployments(self) -> bool:
        """A request refused with "No deployments available" (every deployment of the group
        in cooldown). The callback's failure event is the one count of it: the proxy log line
        for the same refusal (Kind.NO_DEPLOYMENTS) only adds detail, so nothing counts twice."""
        return self.kind == Kind.REQUEST and self.status != "success" and (
            self.normalized_error == NO_HEALTHY_DEPLOYMENTS or self.error_class == ROUTER_RATE_LIMIT)

    def label(self, name: str) -> str:
        """Value of a label by its rule/alert name (`tag_<x>` reads request tags)."""
        getter = LABEL_GETTERS.get(name)
        if getter is not None:
            return getter(self)
        if name.startswith("tag_"):
            prefix = name[4:] + ":"
            found = ""
            for tag in self.tags:  # the last one wins, as in enrich._tag_value
                if tag.startswith(prefix):
                    found = tag[len(prefix) :]
            return found
        value = self.attrs.get(name)
        return "" if value is None else str(value)


_all_fields = operator.attrgetter(*(f.name for f in dataclasses.fields(Event)))


def _bool_label(value: bool) -> str:
    return "true" if value else "false"


# Names usable in rule `by`/`where` and alert labels; kept in one table so rules, alerts
# and docs agree on them.
LABEL_GETTERS: dict[str, Any] = {
    "kind": lambda e: e.kind,
    "source": lambda e: e.source,
    "model": lambda e: e.model,
    "model_group": lambda e: e.model_group,
    "requested_model": lambda e: e.requested_model,
    "deployment": lambda e: e.deployment,
    "api_provider": lambda e: e.api_provider,
    "api_base": lambda e: e.api_base,
    "aws_account": lambda e: e.aws_account,
    "aws_region": lambda e: e.aws_region,
    "call_type": lambda e: e.call_type,
    "stream": lambda e: _bool_label(e.stream),
    "status": lambda e: e.status,
    "status_code": lambda e: e.status_code,
    "error_class": lambda e: e.error_class,
    "error_code": lambda e: e.error_code,
    "normalized_error": lambda e: e.normalized_error,
    "rate_limited": lambda e: _bool_label(e.rate_limited),
    "health_check": lambda e: _bool_label(e.health_check),
    "key_hash": lambda e: e.key_hash,
    "key_alias": lambda e: e.key_alias,
    "team": lambda e: e.team,
    "team_alias": lambda e: e.team_alias,
    "user": lambda e: e.user,
    "end_user": lambda e: e.end_user,
    "org_id": lambda e: e.org_id,
    "org_alias": lambda e: e.org_alias,
    "route": lambda e: e.route,
}

LABEL_NAMES: tuple[str, ...] = tuple(LABEL_GETTERS)
