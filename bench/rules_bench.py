"""Rule evaluation cost: 100 rules x 2,000 label sets, ms per evaluation interval.

Every rule groups by (model_group, deployment, aws_account, aws_region) and 2,000
deployments send traffic, so each rule tracks 2,000 label sets (200,000 series in all).
The mix is what the default pack looks like, scaled up: percentiles of latency/TTFT,
error and throttling ratios, counts, rates, min of the remaining-quota ratio, consecutive
failures, absent. 5% of the deployments are slow/failing, so a realistic number of alerts
is active and goes through the state machine and templating.

Measured: `RuleEngine.evaluate_all` per 15 s interval (applying the interval's buffered
observations included) after 5 minutes of warm-up traffic, and the ingest side
(`handle`, the rule windows' share of the hot path) in events/s.

    .venv/bin/python -m bench.rules_bench [--intervals 20] [--events-per-key 2]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import time

from agent.events import Event, Kind
from agent.rules.config import RuleEngineConfig
from agent.rules.engine import RuleEngine
from agent.rules.schema import build_rule_set
from agent.rules.testing import MemoryState
from bench.results import record

COMMAND = ".venv/bin/python -m bench.rules_bench"
BY = "[model_group, deployment, aws_account, aws_region]"
MIX = [  # (count, signal, aggregate, condition, extra); thresholds that the 5% bad deployments cross
    (20, "latency_seconds", "p95", "above: {t}", "min_events: 5"),
    (10, "ttft_seconds", "p99", "above: {t}", "min_events: 5"),
    (15, "error_ratio", "avg", "above: 0.{i2}", "min_events: 10"),
    (10, "rate_limited_ratio", "avg", "above: 0.{i2}", "min_events: 10"),
    (10, "errors", "count", "above: {t}", ""),
    (10, "requests", "rate", "above: 0.5", ""),
    (10, "remaining_requests_ratio", "min", "below: 0.{i1}", ""),
    (5, "errors", "consecutive", "above: 4", ""),
    (5, "requests", "absent", "", ""),
    (5, "tokens_total", "sum", "above: {t}0000", ""),
]


def rules_yaml() -> str:
    lines = ["groups:"]
    n = 0
    for group in range(4):
        lines += [f"  - name: g{group}", "    interval: 15s", "    rules:"]
        for count, signal, aggregate, condition, extra in MIX:
            for i in range(count):
                if (n + i) % 4 != group:
                    continue
                t = 15 + (i % 7) * 3
                lines += [f"      - alert: R{n + i}_{signal}_{aggregate}", f"        signal: {signal}",
                          f"        aggregate: {aggregate}", "        over: 5m", f"        by: {BY}",
                          "        for: 1m", "        labels: {severity: warning}",
                          "        annotations: {summary: \"{{ value }} on {{ labels.deployment }}\"}"]
                if condition:
                    lines.append("        " + condition.format(t=t, i1=1 + i % 3, i2=20 + i % 20))
                if extra:
                    lines.append("        " + extra)
            n += count
    return "\n".join(lines) + "\n"


def events_for(key: int, t: float, rng: random.Random, bad_every: int = 20) -> Event:
    bad = bad_every > 0 and key % bad_every == 0  # by default 5% of the deployments are slow and failing
    failed = rng.random() < (0.5 if bad else 0.01)
    latency = rng.expovariate(1 / (30.0 if bad else 2.0))
    return Event(Kind.REQUEST, t, model_group=f"group{key % 50}", deployment=f"dep{key}",
                 aws_account=f"{100000000000 + key % 10}", aws_region=f"region-{key % 5}",
                 status="failure" if failed else "success", status_code="500" if failed else "200",
                 rate_limited=failed and rng.random() < 0.5, latency=latency,
                 ttft=latency * 0.3 if rng.random() < 0.5 else None, output_tokens=100,
                 total_tokens=30000 if bad else 300,
                 remaining_requests=rng.uniform(0, 50) if bad else rng.uniform(500, 1000), limit_requests=1000.0)


async def measure(intervals: int, keys: int, per_key: int, bad_every: int) -> dict[str, float]:
    rule_set = build_rule_set([("bench.yml", rules_yaml())], env={})
    assert len(rule_set) == 100
    clock = [1_800_000_000.0]
    engine = RuleEngine(RuleEngineConfig(persist_alerts=False), None, MemoryState(), clock=lambda: clock[0],
                        run_loops=False)
    engine.apply(rule_set)
    rng = random.Random(7)
    eval_ms: list[float] = []
    eval_cpu_ms: list[float] = []
    ingest_s = 0.0
    ingested = 0
    warmup = 20  # 5 minutes of 15 s intervals fill the windows
    for interval in range(warmup + intervals):
        start = clock[0]
        batch = [events_for(k, start + rng.uniform(0, 15), rng, bad_every) for k in range(keys)
                 for _ in range(per_key)]
        t0 = time.perf_counter()
        for i in range(0, len(batch), 512):  # LiteLLM's batch size
            engine.handle(batch[i:i + 512])
        ingest_s += time.perf_counter() - t0
        ingested += len(batch)
        clock[0] = start + 15
        t0, c0 = time.perf_counter(), time.process_time()
        await engine.evaluate_all(clock[0])
        if interval >= warmup:
            eval_ms.append((time.perf_counter() - t0) * 1000)
            eval_cpu_ms.append((time.process_time() - c0) * 1000)
    series = sum(r.series() for r in engine.rules.values())
    active = engine.active_alerts()
    firing = sum(1 for _, a in active if a.state == "firing")
    print(f"{len(rule_set)} rules, {series} series, {len(active)} active alerts ({firing} firing), "
          f"eval cpu median {statistics.median(eval_cpu_ms):.1f} ms, wall median {statistics.median(eval_ms):.1f} ms")
    return {"series": series, "firing": firing, "cpu": statistics.median(eval_cpu_ms), "cpu_max": max(eval_cpu_ms),
            "wall": statistics.median(eval_ms), "ingest_rate": ingested / ingest_s,
            "ingest_us": ingest_s / ingested * 1e6}


async def run(intervals: int, keys: int, per_key: int) -> None:
    for label, bad_every in (("5% of deployments failing", 20), ("no alert", 0)):
        m = await measure(intervals, keys, per_key, bad_every)
        record(f"rule evaluation per 15 s interval, 100 rules x {keys:,} label sets, {label}",
               f"{m['cpu']:.1f} ms CPU median ({m['cpu_max']:.1f} max, wall {m['wall']:.1f}) for {m['series']:,} "
               f"series, {keys * per_key:,} events/interval applied, {m['firing']:,} alerts firing",
               COMMAND, target="< 50 ms")
        if bad_every:
            record("rule windows ingest (handle), 100 rules",
                   f"{m['ingest_rate']:,.0f} events/s ({m['ingest_us']:.1f} µs/event for all 100 rules)", COMMAND)
    rate = default_pack_ingest()
    if rate:
        record("rule windows ingest (handle), default pack (24 rules), captured LiteLLM payloads",
               f"{rate:,.0f} events/s ({1e6 / rate:.1f} µs/event)", COMMAND)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record("rule engine memory, 100 rules x 2,000 label sets", f"{rss:.0f} MiB max RSS (whole process)", COMMAND)


def default_pack_ingest(rounds: int = 200) -> float | None:
    """events/s through the default pack's windows, fed the real captures (health checks included)."""
    import json
    import os
    from pathlib import Path

    from agent.enrich import Catalog, Enricher
    from agent.parse.litellm import decode_body
    from agent.rules.loader import load_rule_set

    root = Path(__file__).resolve().parent.parent
    fixtures = Path(os.environ.get("GATEWATCH_FIXTURES") or root / "tests" / "fixtures" / "litellm")
    files = sorted(fixtures.glob("generic_api_*.json"))
    if not files:
        print("fixtures not found: skipping the default pack figure (set GATEWATCH_FIXTURES)")
        return None
    events = []
    for path in files:
        capture = json.loads(path.read_text())
        events += decode_body((capture["body_text"] or json.dumps(capture["body_json"])).encode()).events
    enricher = Enricher(Catalog())
    for e in events:
        enricher.enrich(e)
    clock = [max(e.time for e in events)]
    engine = RuleEngine(RuleEngineConfig(persist_alerts=False), None, MemoryState(), clock=lambda: clock[0],
                        run_loops=False)
    engine.apply(load_rule_set(None))
    engine.handle(events)  # warm the rows
    t0 = time.perf_counter()
    for _ in range(rounds):
        engine.handle(events)
    elapsed = time.perf_counter() - t0
    return rounds * len(events) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intervals", type=int, default=20)
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--events-per-key", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(run(args.intervals, args.keys, args.events_per_key))


if __name__ == "__main__":
    main()
