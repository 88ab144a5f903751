"""Events -> Prometheus metrics under LiteLLM's own metric and label names.

LiteLLM's published dashboards keep working because names, label names, buckets and the
"None" spelling of missing values are LiteLLM's (1.108.x). gatewatch adds `aws_account`
and `aws_region` (and `model_group` where LiteLLM lacks it). High-cardinality labels are
opt-in; every metric has a series limit past which new label sets fold into one
`__overflow__` series, counted on `gatewatch_series_overflow_total`.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.enrich import Catalog
from agent.events import Event, Kind
from agent.selfmetrics import SelfMetrics

log = logging.getLogger(__name__)

# LiteLLM's LATENCY_BUCKETS (litellm/types/integrations/prometheus.py, 1.108.7)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 420.0,
                   600.0, float("inf"))
OVERFLOW = "__overflow__"
NONE = "None"  # LiteLLM's spelling of a missing label value


def _n(value: str) -> str:
    return value or NONE


def _exception_class(event: Event, provider: str | None = None, error_class: str | None = None) -> str:
    """LiteLLM's `_get_exception_class_name`: the exception's own `llm_provider`, capitalized,
    as a prefix ("Openai.RateLimitError"); none for proxy errors ("ProxyException")."""
    if provider is None:
        provider = event.error_provider if event.source == "callback" else event.api_provider
    error_class = event.error_class if error_class is None else error_class
    if not error_class:
        return NONE
    return f"{provider.capitalize()}.{error_class}" if provider else error_class


def label_values(event: Event) -> dict[str, str]:
    """Every label value an event can give, computed once per event."""
    return {
        "model": _n(event.model),
        "litellm_model_name": _n(event.model),
        "model_group": event.model_group,
        "requested_model": _n(event.requested_model),
        "model_id": _n(event.deployment),
        "api_base": event.api_base,
        "api_provider": _n(event.api_provider),
        "api_key_alias": _n(event.key_alias),
        "team": _n(event.team),
        "team_alias": _n(event.team_alias),
        "org_id": _n(event.org_id),
        "org_alias": _n(event.org_alias),
        "route": event.route,
        "status_code": event.status_code,
        "exception_status": event.status_code,
        "exception_class": _exception_class(event),
        "normalized_error": _n(event.normalized_error),
        "aws_account": event.aws_account,
        "aws_region": event.aws_region,
        "hashed_api_key": _n(event.key_hash),
        "user": _n(event.user),
        "end_user": _n(event.end_user),
        "user_email": _n(event.user_email),
        "client_ip": _n(event.client_ip),
        "user_agent": _n(event.user_agent),
    }


class LimitedFamily:
    """A metric family whose children are cached by label tuple and capped in number."""

    def __init__(self, metric: Any, labelnames: Sequence[str], limit: int, self_metrics: SelfMetrics) -> None:
        self.metric = metric
        self.labelnames = tuple(labelnames)
        self.limit = limit
        self._children: dict[tuple[str, ...], Any] = {}
        self._overflow_counter = self_metrics.series_overflow.labels(metric._name)

    def child(self, values: dict[str, str]) -> Any:
        return self.lookup(values)[0]

    def lookup(self, values: dict[str, str]) -> tuple[Any, bool]:
        """(child, cacheable): an overflow child is not cacheable by label set, because every
        event of a new label set past the limit must count on the overflow counter."""
        key = tuple([values[name] for name in self.labelnames])
        child = self._children.get(key)
        if child is not None:
            return child, True
        if len(self._children) >= self.limit:
            self._overflow_counter.inc()
            key = (OVERFLOW,) * len(self.labelnames)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.metric.labels(*key)
            return child, False
        child = self._children[key] = self.metric.labels(*key)
        return child, True

    def remove_all(self) -> None:
        """Drop every series. Callers go through `PrometheusSink.clear()`, which also empties
        the sink's per-label-set caches of children."""
        self.metric.clear()
        self._children.clear()

    def __len__(self) -> int:
        return len(self._children)


PROXY_LABELS = ("requested_model", "model_id", "api_provider", "api_key_alias", "team", "team_alias", "org_id",
                "org_alias", "route", "aws_account", "aws_region")
PROXY_OPTIONAL = ("hashed_api_key", "user", "end_user", "user_email", "client_ip", "user_agent")
LATENCY_LABELS = ("model", "model_group", "model_id", "requested_model", "api_provider", "api_key_alias", "team",
                  "team_alias", "org_id", "org_alias", "aws_account", "aws_region")
LATENCY_OPTIONAL = ("hashed_api_key", "user", "end_user")
SPEND_LABELS = ("model", "model_group", "model_id", "requested_model", "api_provider", "api_key_alias", "team",
                "team_alias", "org_id", "org_alias", "aws_account", "aws_region")
SPEND_OPTIONAL = ("hashed_api_key", "user", "end_user", "user_email", "client_ip", "user_agent")
DEPLOYMENT_LABELS = ("litellm_model_name", "model_id", "api_base", "api_provider", "model_group", "requested_model",
                     "api_key_alias", "team", "team_alias", "aws_account", "aws_region")
DEPLOYMENT_OPTIONAL = ("hashed_api_key", "client_ip", "user_agent")
REMAINING_LABELS = ("model_group", "api_provider", "api_base", "litellm_model_name", "model_id", "api_key_alias",
                    "aws_account", "aws_region")
STATE_LABELS = ("litellm_model_name", "model_id", "api_base", "api_provider", "model_group", "aws_account",
                "aws_region")
FALLBACK_LABELS = ("requested_model", "fallback_model", "api_key_alias", "team", "team_alias", "exception_status",
                   "exception_class")

# Hot path: the Event fields that decide every label value of the per-attempt families
# (see label_values) and of the per-request ones. One tuple of them (built in C by
# attrgetter) keys a small list of the children an event of that label set touches, so a
# repeat event costs one dict lookup instead of a label dict plus a tuple per family.
_OPTIONAL_FIELDS = {"hashed_api_key": "key_hash", "user": "user", "end_user": "end_user",
                    "user_email": "user_email", "client_ip": "client_ip", "user_agent": "user_agent"}
_REQUEST_KEY_FIELDS = ("model", "model_group", "requested_model", "deployment", "api_base", "api_provider",
                       "key_alias", "team", "team_alias", "org_id", "org_alias", "aws_account", "aws_region",
                       "status_code", "error_class", "error_provider", "normalized_error")
_OUTCOME_KEY_FIELDS = ("requested_model", "deployment", "api_provider", "key_alias", "team", "team_alias", "org_id",
                       "org_alias", "route", "aws_account", "aws_region", "status_code", "error_class",
                       "error_provider")
# slots of a request bundle (indexes into PrometheusSink._request_families)
(_DEP_TOTAL, _DEP_SUCCESS, _DEP_FAILURE, _STATE, _API_LATENCY, _PER_TOKEN, _TOTAL_LATENCY, _TTFT, _OVERHEAD, _SPEND,
 _TOTAL_TOKENS, _INPUT_TOKENS, _OUTPUT_TOKENS, _REMAINING_REQUESTS, _REMAINING_TOKENS, _RATE_LIMITED) = range(16)
_PROXY_TOTAL, _PROXY_FAILED = range(2)


class PrometheusSink:
    name = "prometheus"

    def __init__(
        self,
        registry: CollectorRegistry,
        self_metrics: SelfMetrics,
        optional_labels: Iterable[str] = (),
        series_limit: int = 10000,
        include_health_checks: bool = False,
        catalog: Catalog | None = None,
    ) -> None:
        self.registry = registry
        self.self_metrics = self_metrics
        self.include_health_checks = include_health_checks
        optional = set(optional_labels)
        self._families: list[LimitedFamily] = []

        def family(kind: type, name: str, doc: str, base: Sequence[str], opt: Sequence[str] = (), **kw: Any):
            labels = list(base) + [label for label in opt if label in optional]
            metric = kind(name, doc, labels, registry=registry, **kw)
            fam = LimitedFamily(metric, labels, series_limit, self_metrics)
            self._families.append(fam)
            return fam

        hist = {"buckets": LATENCY_BUCKETS}
        # proxy level: one per HTTP request (outcome events)
        self.proxy_total = family(Counter, "litellm_proxy_total_requests_metric",
                                  "Total requests made to the proxy server (one per client request).",
                                  PROXY_LABELS + ("status_code",), PROXY_OPTIONAL)
        self.proxy_failed = family(Counter, "litellm_proxy_failed_requests_metric",
                                   "Requests that failed after retries and fallbacks.",
                                   PROXY_LABELS + ("exception_status", "exception_class"), PROXY_OPTIONAL)
        # latency (successful attempts, like LiteLLM)
        self.total_latency = family(Histogram, "litellm_request_total_latency_metric",
                                    "Total latency (seconds) for a request to LiteLLM.", LATENCY_LABELS,
                                    LATENCY_OPTIONAL, **hist)
        self.api_latency = family(Histogram, "litellm_llm_api_latency_metric",
                                  "Total latency (seconds) for a model's LLM API call.", LATENCY_LABELS,
                                  LATENCY_OPTIONAL, **hist)
        self.ttft = family(Histogram, "litellm_llm_api_time_to_first_token_metric",
                           "Time to first token (seconds) for streaming LLM API calls.", LATENCY_LABELS,
                           LATENCY_OPTIONAL, **hist)
        self.overhead = family(Histogram, "litellm_overhead_latency_metric",
                               "LiteLLM's own overhead (seconds) on a call.", LATENCY_LABELS, LATENCY_OPTIONAL, **hist)
        # spend and tokens
        self.spend = family(Counter, "litellm_spend_metric", "Total spend (USD) on LLM requests.", SPEND_LABELS,
                            SPEND_OPTIONAL)
        self.total_tokens = family(Counter, "litellm_total_tokens_metric", "Input + output tokens.", SPEND_LABELS,
                                   SPEND_OPTIONAL)
        self.input_tokens = family(Counter, "litellm_input_tokens_metric", "Input (prompt) tokens.", SPEND_LABELS,
                                   SPEND_OPTIONAL)
        self.output_tokens = family(Counter, "litellm_output_tokens_metric", "Output (completion) tokens.",
                                    SPEND_LABELS, SPEND_OPTIONAL)
        # deployment level: one per attempt
        self.dep_total = family(Counter, "litellm_deployment_total_requests",
                                "LLM API calls to a deployment, success and failure.", DEPLOYMENT_LABELS,
                                DEPLOYMENT_OPTIONAL)
        self.dep_success = family(Counter, "litellm_deployment_success_responses",
                                  "Successful LLM API calls to a deployment.", DEPLOYMENT_LABELS, DEPLOYMENT_OPTIONAL)
        self.dep_failure = family(Counter, "litellm_deployment_failure_responses",
                                  "Failed LLM API calls to a deployment (first failed attempt of a request).",
                                  DEPLOYMENT_LABELS + ("exception_status", "exception_class"), DEPLOYMENT_OPTIONAL)
        self.latency_per_token = family(Histogram, "litellm_deployment_latency_per_output_token",
                                        "Latency per output token (seconds).", STATE_LABELS)
        self.remaining_requests = family(Gauge, "litellm_remaining_requests_metric",
                                         "Provider x-ratelimit-remaining-requests of a deployment.", REMAINING_LABELS)
        self.remaining_tokens = family(Gauge, "litellm_remaining_tokens_metric",
                                       "Provider x-ratelimit-remaining-tokens of a deployment.", REMAINING_LABELS)
        self.fallback_ok = family(Counter, "litellm_deployment_successful_fallbacks",
                                  "Requests recovered by a fallback to another model group.", FALLBACK_LABELS)
        self.fallback_failed = family(Counter, "litellm_deployment_failed_fallbacks",
                                      "Fallback attempts that failed (from the proxy logs).", FALLBACK_LABELS)
        # deployment health (callbacks, logs and /health)
        self.state = family(Gauge, "litellm_deployment_state",
                            "Deployment state: 0 healthy, 1 partial outage, 2 complete outage.", STATE_LABELS)
        self.cooled_down = family(Counter, "litellm_deployment_cooled_down",
                                  "Times a deployment was put into cooldown by the router.",
                                  STATE_LABELS + ("exception_status",))
        # what LiteLLM has no metric for
        self.retries = family(Counter, "gatewatch_deployment_retries",
                              "Retries the router made (x-litellm-attempted-retries and proxy logs).",
                              ("model_group", "model_id", "aws_account", "aws_region", "source"))
        self.no_deployments = family(Counter, "gatewatch_no_deployments_available",
                                     "Requests refused because every deployment of the group was in cooldown "
                                     "(counted once, from the callback).",
                                     ("model_group",))
        self.rate_limited = family(Counter, "gatewatch_rate_limited_requests",
                                   "Attempts throttled by the provider or router (429, ThrottlingException).",
                                   ("model_group", "model_id", "api_provider", "aws_account", "aws_region",
                                    "normalized_error"))
        self.proxy_up = family(Gauge, "gatewatch_proxy_up", "1 when the proxy's health endpoint answers OK.",
                               ("endpoint",))
        self.proxy_errors = family(Counter, "gatewatch_proxy_errors",
                                   "Errors reported by the proxy's logs and alerts.", ("error_class", "source"))
        self.budget_alerts = family(Counter, "gatewatch_litellm_alerts",
                                    "Alerts and budget webhooks received from LiteLLM.", ("alert_type",))
        self.health_checks = family(Counter, "gatewatch_health_check_calls",
                                    "LiteLLM's own /health traffic (kept out of the litellm_* series).",
                                    ("model", "api_provider", "status"))
        if catalog is not None:
            registry.register(CatalogLimitsCollector(catalog))
        self._request_families = (self.dep_total, self.dep_success, self.dep_failure, self.state, self.api_latency,
                                  self.latency_per_token, self.total_latency, self.ttft, self.overhead, self.spend,
                                  self.total_tokens, self.input_tokens, self.output_tokens, self.remaining_requests,
                                  self.remaining_tokens, self.rate_limited)
        self._outcome_families = (self.proxy_total, self.proxy_failed)
        extra = tuple(_OPTIONAL_FIELDS[label] for label in sorted(optional) if label in _OPTIONAL_FIELDS)
        self._request_key = operator.attrgetter(*_REQUEST_KEY_FIELDS, *extra)
        self._outcome_key = operator.attrgetter(*_OUTCOME_KEY_FIELDS, *extra)
        self._request_bundles: dict[tuple[str, ...], list[Any]] = {}
        self._outcome_bundles: dict[tuple[str, ...], list[Any]] = {}
        # a cache, not the source of truth (that is each family's capped children): bounded by
        # emptying it when full, so a flood of new label sets cannot grow it
        self._bundle_limit = max(1024, series_limit)
        # deployment id -> (its cooldown state series, when the cooldown started), while at 2
        self._cooled: dict[str, tuple[Any, float]] = {}

    def clear(self) -> None:
        """Drop every series and the cached children."""
        for fam in self._families:
            fam.remove_all()
        self._request_bundles.clear()
        self._outcome_bundles.clear()
        self._cooled.clear()

    def _bundle(self, cache: dict[tuple[str, ...], list[Any]], key: tuple[str, ...], size: int) -> list[Any]:
        if len(cache) >= self._bundle_limit:
            cache.clear()
        slots = cache[key] = [None] * size
        return slots

    def _fill(self, slots: list[Any], slot: int, event: Event, families: tuple[LimitedFamily, ...]) -> Any:
        """First use of a family by a label set: the slow path (label dict, limit check)."""
        child, cacheable = families[slot].lookup(label_values(event))
        if cacheable:
            slots[slot] = child
        return child

    @property
    def series(self) -> int:
        return sum(len(f) for f in self._families)

    def handle(self, events: Sequence[Event]) -> int:
        failed = 0
        for event in events:
            kind = event.kind
            try:  # per event: a value the edge let through costs that event, not the batch
                if kind == Kind.REQUEST:
                    self._request(event)
                elif kind == Kind.OUTCOME:
                    self._outcome(event)
                else:
                    self._other(event)
            except Exception:
                failed += 1
                if failed == 1:
                    log.exception("prometheus sink: a %s event failed", kind)
        return failed

    def _request(self, event: Event) -> None:
        if event.health_check and not self.include_health_checks:
            self.health_checks.child(
                {"model": _n(event.model), "api_provider": _n(event.api_provider), "status": event.status}
            ).inc()
            return
        key = self._request_key(event)
        slots = self._request_bundles.get(key)
        if slots is None:
            slots = self._bundle(self._request_bundles, key, 16)
        fams = self._request_families
        fill = self._fill
        has_deployment = bool(event.deployment or event.api_base)
        if has_deployment:
            (slots[_DEP_TOTAL] or fill(slots, _DEP_TOTAL, event, fams)).inc()
        if event.status == "success":
            if has_deployment:
                (slots[_DEP_SUCCESS] or fill(slots, _DEP_SUCCESS, event, fams)).inc()
                (slots[_STATE] or fill(slots, _STATE, event, fams)).set(0)
                if self._cooled:
                    self._end_cooldown(event)
            latency = event.latency
            if latency is not None:
                (slots[_API_LATENCY] or fill(slots, _API_LATENCY, event, fams)).observe(latency)
                if event.output_tokens > 0 and has_deployment:
                    (slots[_PER_TOKEN] or fill(slots, _PER_TOKEN, event, fams)).observe(latency / event.output_tokens)
            if event.total_latency is not None:
                (slots[_TOTAL_LATENCY] or fill(slots, _TOTAL_LATENCY, event, fams)).observe(event.total_latency)
            if event.ttft is not None:
                (slots[_TTFT] or fill(slots, _TTFT, event, fams)).observe(event.ttft)
            if event.overhead is not None:
                (slots[_OVERHEAD] or fill(slots, _OVERHEAD, event, fams)).observe(event.overhead)
            (slots[_SPEND] or fill(slots, _SPEND, event, fams)).inc(event.cost_usd)
            (slots[_TOTAL_TOKENS] or fill(slots, _TOTAL_TOKENS, event, fams)).inc(event.total_tokens)
            (slots[_INPUT_TOKENS] or fill(slots, _INPUT_TOKENS, event, fams)).inc(event.input_tokens)
            (slots[_OUTPUT_TOKENS] or fill(slots, _OUTPUT_TOKENS, event, fams)).inc(event.output_tokens)
            # LiteLLM sets the remaining gauges from successful calls only: a 429's headers
            # (remaining 0, good until its reset) must not stick as the deployment's reading
            if has_deployment and event.remaining_requests is not None:
                (slots[_REMAINING_REQUESTS] or fill(slots, _REMAINING_REQUESTS, event, fams)).set(
                    event.remaining_requests)
            if has_deployment and event.remaining_tokens is not None:
                (slots[_REMAINING_TOKENS] or fill(slots, _REMAINING_TOKENS, event, fams)).set(event.remaining_tokens)
            if event.retries:
                values = label_values(event)
                values["source"] = "callback"
                self.retries.child(values).inc(event.retries)
            if event.fallbacks:
                attrs = event.attrs
                values = label_values(event)
                values["requested_model"] = _n(attrs.get("fallback_from_group") or event.requested_model)
                values["fallback_model"] = event.model_group
                values["exception_status"] = attrs.get("fallback_from_status", NONE)
                values["exception_class"] = _exception_class(
                    event, attrs.get("fallback_from_provider", ""), attrs.get("fallback_from_class", "")
                )
                values["model_id"] = NONE
                self.fallback_ok.child(values).inc()
        else:
            if has_deployment:
                (slots[_DEP_FAILURE] or fill(slots, _DEP_FAILURE, event, fams)).inc()
                (slots[_STATE] or fill(slots, _STATE, event, fams)).set(1)
            if event.rate_limited:
                (slots[_RATE_LIMITED] or fill(slots, _RATE_LIMITED, event, fams)).inc()
            if event.is_no_deployments:  # rare: no cached child needed
                self.no_deployments.child({"model_group": event.model_group}).inc()

    def _outcome(self, event: Event) -> None:
        key = self._outcome_key(event)
        slots = self._outcome_bundles.get(key)
        if slots is None:
            slots = self._bundle(self._outcome_bundles, key, 2)
        fams = self._outcome_families
        (slots[_PROXY_TOTAL] or self._fill(slots, _PROXY_TOTAL, event, fams)).inc()
        if event.status != "success":
            (slots[_PROXY_FAILED] or self._fill(slots, _PROXY_FAILED, event, fams)).inc()

    def _end_cooldown(self, event: Event) -> None:
        """The deployment serves again: a call that *started* after its cooldown did is over it.
        A success that started earlier says nothing of the cooldown, however late it arrives
        (callbacks come in batches, the cooldown comes from the log tail as it is written)."""
        cooled = self._cooled.get(event.deployment)
        if cooled is None:
            return
        state, cooled_at = cooled
        started = event.start_time if event.start_time is not None else event.time
        if started > cooled_at:
            del self._cooled[event.deployment]
            state.set(0)

    def _other(self, event: Event) -> None:
        kind = event.kind
        if kind == Kind.COOLDOWN:
            # LiteLLM's cooldown callback labels the deployment with its model *group* name
            # (`deployment.model_name`), so its "complete outage" is a series of its own next
            # to the 0/1 series the calls keep under the provider model name
            # Known difference: LiteLLM never sets that series back; gatewatch sets it to 0 at
            # the deployment's next successful call, so a dashboard's max() does not show a
            # complete outage for good after one cooldown.
            values = label_values(event)
            values["litellm_model_name"] = _n(event.model_group or event.model)
            self.cooled_down.child(values).inc()
            state = self.state.child(values)
            state.set(2)
            if event.deployment and len(self._cooled) < self._bundle_limit:
                self._cooled[event.deployment] = (state, event.time)
        elif kind == Kind.DEPLOYMENT_STATE and event.value is not None and event.source == "health":
            # opt-in /health polling (litellm.deployment_health_interval): a reading LiteLLM's
            # own gauge does not have, documented as a difference. Failed retries seen in the
            # logs only feed the rules' deployment_state signal: LiteLLM's callbacks never see
            # them, so its gauge is set by calls and cooldowns alone, and so is this one.
            self.state.child(label_values(event)).set(event.value)
        elif kind == Kind.RETRY:
            values = label_values(event)
            values["source"] = event.source
            self.retries.child(values).inc(event.value or 1)
        elif kind == Kind.FALLBACK and event.status != "success":
            values = label_values(event)
            values["fallback_model"] = str(event.attrs.get("fallback_model") or NONE)
            self.fallback_failed.child(values).inc()
        elif kind == Kind.PROXY_STATE and event.value is not None:
            self.proxy_up.child({"endpoint": str(event.attrs.get("endpoint") or "readiness")}).set(event.value)
        elif kind == Kind.PROXY_ERROR:
            self.proxy_errors.child({"error_class": event.error_class or str(event.attrs.get("alert_type") or NONE),
                                     "source": event.source}).inc()
        elif kind == Kind.BUDGET:
            self.budget_alerts.child({"alert_type": str(event.attrs.get("alert_type") or NONE)}).inc()

    async def start(self) -> None:
        return None

    async def stop(self, deadline: float) -> None:
        return None


class CatalogLimitsCollector(Collector):
    """litellm_deployment_rpm_limit / tpm_limit, read from the catalog at scrape time."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def describe(self):
        return []

    def collect(self):
        labels = ["model_group", "model_id", "api_base", "api_provider", "litellm_model_name", "aws_account",
                  "aws_region"]
        rpm = GaugeMetricFamily("litellm_deployment_rpm_limit", "Configured rpm limit of a deployment.",
                                labels=labels)
        tpm = GaugeMetricFamily("litellm_deployment_tpm_limit", "Configured tpm limit of a deployment.",
                                labels=labels)
        for dep in self.catalog:
            values = [dep.model_group, dep.id, dep.api_base, dep.provider, dep.model, dep.aws_account or "unknown",
                      dep.aws_region or "unknown"]
            if dep.rpm is not None:
                rpm.add_metric(values, dep.rpm)
            if dep.tpm is not None:
                tpm.add_metric(values, dep.tpm)
        yield rpm
        yield tpm
