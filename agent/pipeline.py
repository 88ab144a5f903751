"""The middle of gatewatch: enrich events, merge attempts into requests, fan out to sinks.

Sources call `Pipeline.publish(events)`; sinks implement `Sink`. Sources never know which
sinks exist, and sinks never parse. Fan-out is synchronous and cheap by contract: a sink
that exports over the network (OTLP, CloudWatch API, notifications) only enqueues on a
bounded queue in `handle` and does its I/O in its own task, counting what it drops.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from agent.enrich import Enricher
from agent.events import Event, Kind

log = logging.getLogger(__name__)


@runtime_checkable
class Sink(Protocol):
    """What every consumer of events implements."""

    name: str

    def handle(self, events: Sequence[Event]) -> int | None:
        """Take a batch of events. Must not block or do network I/O.

        One bad event must not cost the others: a sink isolates per event and returns how
        many it could not take (None means all were taken)."""

    async def start(self) -> None:
        """Start background work (exporters, timers)."""

    async def stop(self, deadline: float) -> None:
        """Flush what is queued until `deadline` (time.monotonic()) and release resources; called
        once, at shutdown."""


class RequestTracker:
    """Turns LiteLLM's per-attempt events into one outcome per proxy request.

    LiteLLM reports the first failed attempt of a request and, if a retry or fallback
    recovers it, a success with the same `litellm_call_id`. A failure is therefore held
    for `window` seconds before it counts as a failed request; a success arriving in that
    time replaces it. Successes count at once.
    """

    def __init__(self, window: float, max_pending: int = 100000, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.max_pending = max_pending
        self._clock = clock
        self._pending: OrderedDict[str, tuple[float, Event]] = OrderedDict()
        self.recovered = 0  # failures superseded by a success of the same call

    def __len__(self) -> int:
        return len(self._pending)

    def observe(self, event: Event, out: list[Event]) -> None:
        if event.kind != Kind.REQUEST or event.health_check:
            return
        if event.status == "success":
            held = self._pending.pop(event.call_id, None) if event.call_id else None
            if held is not None:
                first = held[1]
                self.recovered += 1
                if event.fallbacks:
                    # the request counts under the group that served it, as in LiteLLM's own
                    # metrics; the group asked for is kept for the fallback counter and traces
                    event.attrs = dict(event.attrs)
                    event.attrs["fallback_from_group"] = first.requested_model or first.model_group
                    event.attrs["fallback_from_status"] = first.status_code
                    event.attrs["fallback_from_class"] = first.error_class
                    event.attrs["fallback_from_provider"] = first.error_provider
            out.append(event.copy(kind=Kind.OUTCOME))
            return
        if not event.call_id or self.window <= 0:
            out.append(event.copy(kind=Kind.OUTCOME))
            return
        if event.call_id in self._pending:
            return  # a later failed attempt of a request we already hold
        self._pending[event.call_id] = (self._clock() + self.window, event)
        while len(self._pending) > self.max_pending:
            _, (_, oldest) = self._pending.popitem(last=False)
            out.append(oldest.copy(kind=Kind.OUTCOME))

    def expire(self, now: float | None = None) -> list[Event]:
        now = self._clock() if now is None else now
        out: list[Event] = []
        while self._pending:
            call_id, (deadline, event) = next(iter(self._pending.items()))
            if deadline > now:
                break
            del self._pending[call_id]
            out.append(event.copy(kind=Kind.OUTCOME))
        return out

    def flush(self) -> list[Event]:
        out = [event.copy(kind=Kind.OUTCOME) for _, event in self._pending.values()]
        self._pending.clear()
        return out


class Pipeline:
    def __init__(self, enricher: Enricher, tracker: RequestTracker, sinks: Sequence[Sink] = ()) -> None:
        self.enricher = enricher
        self.tracker = tracker
        self.sinks: list[Sink] = list(sinks)
        self.on_sink_error: Callable[[str, int], None] | None = None
        # per sink: events taken, so "accepted == counted by every sink" can be checked
        self.on_sink_handled: Callable[[str, int], None] | None = None
        # cuts over-long label values before enrichment and every sink (agent/labelcap.py)
        self.label_cap: Callable[[Event], None] | None = None
        self.published = 0

    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        enrich = self.enricher.enrich
        observe = self.tracker.observe
        outcomes: list[Event] = []
        cap = self.label_cap
        for event in events:
            if cap is not None:
                cap(event)
            enrich(event)
            observe(event, outcomes)
        batch = list(events) + outcomes if outcomes else events
        self._fan_out(batch)

    def publish_attributed(self, events: Sequence[Event]) -> None:
        """Events whose source already set account and region (the quota service): no enrichment,
        no request merging, straight to the sinks."""
        if events:
            self._fan_out(events)

    def tick(self, now: float | None = None) -> None:
        """Release failures whose merge window has passed (called every second)."""
        expired = self.tracker.expire(now)
        if expired:
            self._fan_out(expired)

    def flush(self) -> None:
        """Release every held failure now (shutdown, end of a replay)."""
        pending = self.tracker.flush()
        if pending:
            self._fan_out(pending)

    def _fan_out(self, batch: Sequence[Event]) -> None:
        self.published += len(batch)
        for sink in self.sinks:
            try:
                failed = sink.handle(batch) or 0
            except Exception:  # one broken sink must not take the others down
                log.exception("sink %s failed on a batch of %d events", sink.name, len(batch))
                failed = len(batch)
            if failed and self.on_sink_error is not None:
                self.on_sink_error(sink.name, failed)
            if self.on_sink_handled is not None:
                self.on_sink_handled(sink.name, len(batch) - failed)
