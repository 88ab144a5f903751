"""The console's Deployments window on the hot path: cost of `DeploymentStats.handle` per event.

The console adds one sink to every event (sixty one-minute buckets per deployment), so its
share of the ingest budget is measured alone, in process, on the real captures ("95%
successes" mix, enriched against the lab catalog), and the snapshot the page reads once
per refresh is timed at 2,000 deployments.

    .venv/bin/python -m bench.console_bench [--events 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from prometheus_client import CollectorRegistry

from agent.console.deployments import DeploymentStats
from agent.enrich import Enricher, catalog_from_config_text
from agent.events import Event, Kind
from agent.parse.litellm import decode_body
from agent.selfmetrics import SelfMetrics
from agent.sinks.prometheus import PrometheusSink
from bench.results import record
from bench.support import events, lab_environ, mix
from tests.conftest import FIXTURES

COMMAND = ".venv/bin/python -m bench.console_bench"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    os.environ.update(lab_environ())
    catalog = catalog_from_config_text((FIXTURES / "config.yaml").read_text())
    enricher = Enricher(catalog)
    items = events(mix("production"), 2000)
    decoded = decode_body(json.dumps(items).encode()).events
    for event in decoded:
        enricher.enrich(event)
    batch = [e for e in decoded if e.kind == Kind.REQUEST]
    stats = DeploymentStats(catalog)
    registry = CollectorRegistry()
    reference = PrometheusSink(registry, SelfMetrics(registry), catalog=catalog)  # the sink every event meets
    rounds = max(1, args.events // len(batch))
    per_event = {}
    for name, sink in (("console", stats), ("prometheus", reference)):
        start = time.perf_counter()
        for _ in range(rounds):
            sink.handle(batch)
        per_event[name] = (time.perf_counter() - start) / (rounds * len(batch))
    record("console: Deployments window, handle() per event",
           f"{per_event['console'] * 1e6:.2f} µs ({per_event['console'] / per_event['prometheus']:.2f}x the "
           f"Prometheus sink's {per_event['prometheus'] * 1e6:.2f} µs in the same run)", COMMAND)

    big = DeploymentStats(None)
    big.handle([Event(kind=Kind.REQUEST, time=0, deployment=f"d{i}", model_group=f"g{i % 50}", latency=0.2)
                for i in range(2000)])
    start = time.perf_counter()
    for _ in range(5):
        big.snapshot()
    record("console: Deployments snapshot at 2,000 deployments", f"{(time.perf_counter() - start) / 5 * 1e3:.0f} ms",
           COMMAND)


if __name__ == "__main__":
    main()
