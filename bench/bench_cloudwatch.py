"""CloudWatch sink: hot-path cost per event and per-interval serialization cost.

`handle` runs on the event loop for every event (budget: the whole pipeline at 20,000
events/s on one core), and each interval serializes every series once. Events are the
real captures (parsed and enriched), spread over many deployments to make series.

    .venv/bin/python -m bench.bench_cloudwatch
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry

from agent.config import parse_config
from agent.events import Event
from agent.sinks.cloudwatch import CloudWatchSink
from agent.sinks.cloudwatch_api import batches
from agent.sinks.cloudwatch_emf import emf_lines
from bench.results import record

COMMAND = ".venv/bin/python -m bench.bench_cloudwatch"


def _events(n: int, deployments: int) -> list[Event]:
    from tests.conftest import lab_env
    from tests.test_cloudwatch_agg import replayed_events

    os.environ.update({k: v for k, v in lab_env().items() if k not in os.environ})  # the capture config's env

    base = [e for e in replayed_events() if not e.health_check]
    out = []
    for i in range(n):
        event = base[i % len(base)].copy()
        event.deployment = f"{event.deployment or 'd'}-{i % deployments}"
        if event.latency is not None:
            event.latency *= 1.0 + (i % 97) / 100.0
        out.append(event)
    return out


def main() -> None:
    cfg = parse_config({"cloudwatch": {"enabled": True, "emf_output": "/dev/null"}}).cloudwatch
    sink = CloudWatchSink(cfg, CollectorRegistry())
    events = _events(200_000, deployments=200)
    start = time.perf_counter()
    for i in range(0, len(events), 512):  # LiteLLM's batch size
        sink.handle(events[i : i + 512])
    elapsed = time.perf_counter() - start
    rate = len(events) / elapsed
    record("cloudwatch handle() events/s", f"{rate:,.0f}", COMMAND, target=">= 100,000 (a fraction of the pipeline)")

    series = len(sink.aggregator)
    start = time.perf_counter()
    interval = sink.aggregator.drain(time.time() // 60 * 60)
    lines = list(emf_lines(interval, "LiteLLM"))
    emf_ms = (time.perf_counter() - start) * 1000
    record("cloudwatch EMF interval build (worker thread)",
           f"{emf_ms:.0f} ms for {series} series -> {len(lines)} lines", COMMAND)
    start = time.perf_counter()
    calls = batches(interval)
    api_ms = (time.perf_counter() - start) * 1000
    datums = sum(len(c.payload) for c in calls)
    record("cloudwatch API interval build (worker thread)",
           f"{api_ms:.0f} ms for {datums} datums -> {len(calls)} PutMetricData calls", COMMAND)

if __name__ == "__main__":
    main()
