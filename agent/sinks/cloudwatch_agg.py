"""Per-interval aggregation of events into CloudWatch series (shared by EMF and API mode).

CloudWatch bills per metric and per call, not per event, so gatewatch never sends one
datapoint per request: `Aggregator.add` folds each event into one series keyed by every
dimension any configured dimension set uses (one dict lookup on the hot path), and
`Aggregator.drain` rolls those up into each dimension set once per interval.

Latency and TTFT are kept as distributions: log-spaced bins 2% wide, each bin holding
its count, sum, min and max. The value sent for a bin is the mean of the values in it,
so Sum and SampleCount are exact, Min/Max are exact, and CloudWatch percentiles are off
by at most the bin width, while the number of distinct values per interval stays small
(CloudWatch takes 150 values per PutMetricData datum, EMF 100 per metric).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from agent.events import Event, Kind
from agent.sinks.config import MISSING

# dimension name (CloudWatch) -> how to read it from an event
DIMENSION_GETTERS: dict[str, Callable[[Event], str]] = {
    "ModelGroup": lambda e: e.model_group,
    "Deployment": lambda e: e.deployment,
    "AwsAccount": lambda e: e.aws_account,
    "AwsRegion": lambda e: e.aws_region,
    "Provider": lambda e: e.api_provider,
}
DIMENSION_NAMES: tuple[str, ...] = tuple(DIMENSION_GETTERS)
OVERFLOW = "__overflow__"

# counters, in the order Series.counters holds them
REQUESTS, ERRORS, RATE_LIMITED, RETRIES, COOLDOWNS, INPUT_TOKENS, OUTPUT_TOKENS, COST = range(8)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    unit: str  # a CloudWatch StandardUnit
    doc: str


COUNTER_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("Requests", "Count", "LLM API attempts LiteLLM reported (health checks excluded)"),
    MetricSpec("Errors", "Count", "failed attempts (the first failed attempt of a request, as LiteLLM reports)"),
    MetricSpec("RateLimited", "Count", "attempts throttled by the provider (429, ThrottlingException); "
                                       "not the router's 'no deployments available'"),
    MetricSpec("Retries", "Count", "router retries (x-litellm-attempted-retries and retries seen in the proxy logs)"),
    MetricSpec("Cooldowns", "Count", "times a deployment was put into cooldown"),
    MetricSpec("InputTokens", "Count", "prompt tokens"),
    MetricSpec("OutputTokens", "Count", "completion tokens"),
    MetricSpec("CostUSD", "None", "spend in US dollars (LiteLLM response_cost)"),
)
LATENCY = MetricSpec("Latency", "Milliseconds", "LLM API latency of successful attempts")
TTFT = MetricSpec("TTFT", "Milliseconds", "time to first token of successful streaming attempts")
DISTRIBUTION_METRICS: tuple[MetricSpec, ...] = (LATENCY, TTFT)
ALL_METRICS: tuple[MetricSpec, ...] = COUNTER_METRICS + DISTRIBUTION_METRICS

_BIN_GROWTH = 1.02  # bin width: 2% relative
_LOG_GROWTH = math.log(_BIN_GROWTH)
_ZERO_BIN = -(2**31)


class Distribution:
    """A mergeable histogram with exact count, sum, min and max per bin."""

    __slots__ = ("bins", "count", "max", "min", "sum")

    def __init__(self) -> None:
        self.bins: dict[int, list[float]] = {}  # index -> [count, sum, min, max]
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        if not value > 0.0:  # also catches NaN
            if value != value:
                return
            value = 0.0
            index = _ZERO_BIN
        else:
            index = math.floor(math.log(value) / _LOG_GROWTH)
        entry = self.bins.get(index)
        if entry is None:
            self.bins[index] = [1, value, value, value]
        else:
            entry[0] += 1
            entry[1] += value
            if value < entry[2]:
                entry[2] = value
            if value > entry[3]:
                entry[3] = value
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def merge(self, other: Distribution) -> None:
        for index, (count, total, low, high) in other.bins.items():
            entry = self.bins.get(index)
            if entry is None:
                self.bins[index] = [count, total, low, high]
            else:
                entry[0] += count
                entry[1] += total
                entry[2] = min(entry[2], low)
                entry[3] = max(entry[3], high)
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def __len__(self) -> int:
        return len(self.bins)

    def chunks(self, max_values: int) -> Iterator[DistributionChunk]:
        """Split into pieces of at most `max_values` distinct values, each with its own stats."""
        ordered = [self.bins[i] for i in sorted(self.bins)]
        for start in range(0, len(ordered), max_values):
            part = ordered[start : start + max_values]
            yield DistributionChunk(
                values=[_round(total / count) for count, total, _, _ in part],
                counts=[int(count) for count, _, _, _ in part],
                count=int(sum(p[0] for p in part)),
                sum=_round(sum(p[1] for p in part)),
                min=_round(min(p[2] for p in part)),
                max=_round(max(p[3] for p in part)),
            )


def _round(value: float) -> float:
    """Drop float noise (0.30000000000000004) from what we serialize; 12 significant digits."""
    return float(f"{value:.12g}")


@dataclass
class DistributionChunk:
    values: list[float]
    counts: list[int]
    count: int
    sum: float
    min: float
    max: float


class Series:
    """Everything one series (one set of dimension values) accumulated in an interval."""

    __slots__ = ("counters", "latency", "ttft")

    def __init__(self) -> None:
        self.counters = [0.0] * len(COUNTER_METRICS)
        self.latency: Distribution | None = None
        self.ttft: Distribution | None = None

    def merge(self, other: Series) -> None:
        counters = self.counters
        for i, value in enumerate(other.counters):
            counters[i] += value
        for name in ("latency", "ttft"):
            theirs = getattr(other, name)
            if theirs is None:
                continue
            mine = getattr(self, name)
            if mine is None:
                mine = Distribution()
                setattr(self, name, mine)
            mine.merge(theirs)

    def distributions(self) -> Iterator[tuple[MetricSpec, Distribution]]:
        if self.latency is not None and self.latency.count:
            yield LATENCY, self.latency
        if self.ttft is not None and self.ttft.count:
            yield TTFT, self.ttft


@dataclass
class SeriesPoint:
    """One series of one dimension set in one interval, ready to serialize."""

    dimensions: tuple[tuple[str, str], ...]  # (name, value) in the set's order
    series: Series


@dataclass
class Interval:
    timestamp: float  # epoch seconds: start of the aggregation interval
    points: list[SeriesPoint]
    events: int  # events folded in (for logs and tests)


def clean_dimension_value(value: str) -> str:
    """CloudWatch dimension values: 1-1024 printable ASCII characters, not only whitespace."""
    if not value or value.isspace():
        return MISSING
    if value.isascii() and value.isprintable():
        return value[:1024]
    cleaned = "".join(ch if (ch.isascii() and ch.isprintable()) else "?" for ch in value)
    return cleaned[:1024] if cleaned.strip() else MISSING


class Aggregator:
    """Folds events into series for the current interval; not thread-safe (event loop only)."""

    def __init__(self, dimension_sets: Sequence[Sequence[str]], max_series: int = 5000) -> None:
        unknown = [d for dims in dimension_sets for d in dims if d not in DIMENSION_GETTERS]
        if unknown:
            raise ValueError(f"unknown CloudWatch dimension {unknown[0]!r}")
        self.dimension_sets = [tuple(dims) for dims in dimension_sets]
        used = {d for dims in self.dimension_sets for d in dims}
        self.key_names = tuple(d for d in DIMENSION_NAMES if d in used)  # the full key: every used dimension
        self._getters = tuple(DIMENSION_GETTERS[d] for d in self.key_names)
        self._projections = [tuple(self.key_names.index(d) for d in dims) for dims in self.dimension_sets]
        self.max_series = max_series
        self._series: dict[tuple[str, ...], Series] = {}
        self._events = 0
        self.overflowed = 0  # events folded into the overflow series (over max_series)

    def __len__(self) -> int:
        return len(self._series)

    @property
    def pending_events(self) -> int:
        return self._events

    def _series_for(self, event: Event) -> Series:
        key = tuple(getter(event) for getter in self._getters)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.max_series:
                self.overflowed += 1
                key = (OVERFLOW,) * len(key)
                series = self._series.get(key)
            if series is None:
                series = Series()
                self._series[key] = series
        return series

    def add(self, event: Event) -> bool:
        """Fold one event in; returns False when the event carries nothing for CloudWatch."""
        kind = event.kind
        if kind == Kind.REQUEST:
            if event.health_check:
                return False
            success = event.status == "success"
            # every number first: a malformed event raises here, before anything is counted
            latency = event.latency * 1000.0 if success and event.latency is not None else None
            ttft = event.ttft * 1000.0 if success and event.ttft is not None else None
            retries = float(event.retries or 0)
            input_tokens = float(event.input_tokens)
            output_tokens = float(event.output_tokens)
            cost = float(event.cost_usd)
            if not (math.isfinite(cost) and math.isfinite(retries + input_tokens + output_tokens)):
                raise ValueError("non-finite number")  # NaN/inf would make the whole EMF line invalid
            series = self._series_for(event)
            c = series.counters
            c[REQUESTS] += 1
            if not success:
                c[ERRORS] += 1
                if event.rate_limited and not event.is_no_deployments:  # one definition (Event)
                    c[RATE_LIMITED] += 1
            if latency is not None:
                if series.latency is None:
                    series.latency = Distribution()
                series.latency.add(latency)
            if ttft is not None:
                if series.ttft is None:
                    series.ttft = Distribution()
                series.ttft.add(ttft)
            c[RETRIES] += retries
            c[INPUT_TOKENS] += input_tokens
            c[OUTPUT_TOKENS] += output_tokens
            c[COST] += cost
        elif kind == Kind.RETRY:
            if event.source == "callback":
                return False  # callback retries arrive as Event.retries on the request itself
            amount = float(event.value) if event.value is not None else 1.0
            self._series_for(event).counters[RETRIES] += amount
        elif kind == Kind.COOLDOWN:
            self._series_for(event).counters[COOLDOWNS] += 1
        else:
            return False
        self._events += 1
        return True

    def drain(self, timestamp: float) -> Interval:
        """Take what the interval accumulated, rolled up into every dimension set; start afresh."""
        return self.rollup(self.take(), timestamp)

    def take(self) -> tuple[dict[tuple[str, ...], Series], int]:
        """Swap out the current interval (O(1), on the event loop); `rollup` it anywhere."""
        taken = (self._series, self._events)
        self._series, self._events = {}, 0
        return taken

    def rollup(self, taken: tuple[dict[tuple[str, ...], Series], int], timestamp: float) -> Interval:
        """Series per dimension set; touches only `taken`, so it can run in a worker thread."""
        current, events = taken
        points: list[SeriesPoint] = []
        cleaned: dict[str, str] = {}
        for dims, projection in zip(self.dimension_sets, self._projections, strict=True):
            rolled: dict[tuple[str, ...], Series] = {}
            for key, series in current.items():
                sub = tuple(key[i] for i in projection)
                target = rolled.get(sub)
                if target is None:
                    target = Series()
                    rolled[sub] = target
                target.merge(series)
            for sub, series in rolled.items():
                values = []
                for raw in sub:
                    value = cleaned.get(raw)
                    if value is None:
                        value = cleaned[raw] = clean_dimension_value(raw)
                    values.append(value)
                points.append(SeriesPoint(tuple(zip(dims, values, strict=True)), series))
        return Interval(timestamp=timestamp, points=points, events=events)
