"""Tail-style sampling: decided on the finished call, because the whole call is known.

A head sampler has to decide before it knows whether a call fails; gatewatch sees the
call after it ended, so it keeps every failure (and every success that needed a retry or
a fallback: the other half of a failed attempt's trace), every call slower than the
threshold, and applies OpenTelemetry's configured sampler only to the plain successes.
Ratio decisions use the trace id, so all attempts of one call agree, on every task.
"""

from __future__ import annotations

from agent.events import Event
from agent.otel.ids import Parent, parse_traceparent, ratio_position, trace_id_for


class TailSampler:
    def __init__(self, sampler: str = "parentbased_always_on", ratio: float = 1.0, keep_errors: bool = True,
                 keep_slower_than: float | None = None) -> None:
        self.sampler = sampler
        self.ratio = ratio
        self.keep_errors = keep_errors
        self.keep_slower_than = keep_slower_than
        self.parent_based = sampler.startswith("parentbased_")
        root = sampler.removeprefix("parentbased_")
        self._root_all = root == "always_on" or (root == "traceidratio" and ratio >= 1.0)
        self._root_none = root == "always_off" or (root == "traceidratio" and ratio <= 0.0)

    @property
    def keeps_everything(self) -> bool:
        """True when every span is kept: the sink can skip the per-event decision."""
        return self._root_all and not self.parent_based

    def keep(self, event: Event) -> bool:
        if self.keep_errors and (event.status != "success" or event.retries or event.fallbacks):
            return True
        if self.keep_slower_than is not None and event.latency is not None and event.latency >= self.keep_slower_than:
            return True
        parent: Parent | None = None
        if self.parent_based and event.traceparent:
            parent = parse_traceparent(event.traceparent)
            if parent is not None:
                return parent.sampled
        if self._root_all:
            return True
        if self._root_none:
            return False
        return ratio_position(trace_id_for(event, parent)) < self.ratio
