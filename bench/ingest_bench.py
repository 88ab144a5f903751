"""Ingest: events/s and CPU per event through `POST /v1/litellm/events`, gatewatch on one core.

gatewatch runs as `gatewatch run` pinned to one CPU with every sink on: Prometheus, the
default rule pack, and OTel spans exported over OTLP/HTTP to a receiver on the other CPU
(which decodes every request and counts the spans). The load generator, also on the other
CPU, POSTs real fixture payloads (fresh call ids) in 100-event JSON arrays, and, for the
1-event figure, one object per POST (LiteLLM's `log_format: single`).

The clock stops when the receiver has every span (nothing may be dropped: the run checks
the drop counters), so "events/s" is end to end. CPU per event is the server process's
user+system CPU (all threads) over the run. The reference, measured in the same run: a
bare `orjson.loads` of the same bodies.

    .venv/bin/python -m bench.ingest_bench [--events 30000] [--rounds 2] [--no-profile]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from bench import support
from bench.results import record

COMMAND = ".venv/bin/python -m bench.ingest_bench"
ROUTE = "/v1/litellm/events"
PROFILES = Path(__file__).resolve().parent / "profiles"


def server_config(otel_url: str | None, rules: bool) -> dict:
    config = support.catalog_config()
    config["prometheus"] = {"process_metrics": True}
    config["rule_engine"] = {"enabled": rules}
    if otel_url is not None:
        config.update(support.otel_config(otel_url))
    return config


def run_once(label: str, items: list[dict], per_post: int, otel: bool, rules: bool, concurrency: int,
             profile: Path | None = None) -> dict:
    """One server, a warm-up, then the measured run. Returns the figures of this run."""
    server_cpu, client_cpu = support.cpus()
    support.pin(client_cpu)
    payloads = support.bodies(support.retime(items), per_post)  # recent: the rule windows count them
    warm = support.bodies(support.events(items, min(len(items), 2000), seed=99), per_post)
    with support.workdir("ingest") as tmp:
        work = Path(tmp)
        peer = support.Peer("otlp", work, client_cpu) if otel else None
        server = support.GatewatchServer(server_config(peer.url if peer else None, rules), work, server_cpu)
        try:
            url = server.url + ROUTE
            asyncio.run(support.post_all(url, warm, concurrency))
            warm_spans = support.expected_spans(support.events(items, min(len(items), 2000), seed=99))
            if peer is not None:
                support.wait_until(lambda: peer.stats()["spans"] >= warm_spans, 120, "warm-up spans")
                peer.reset()
            spy = support.PySpy(server.process.pid, profile) if profile is not None else None
            cpu0, t0 = server.cpu_seconds(), time.perf_counter()
            latencies = asyncio.run(support.post_all(url, payloads, concurrency))
            posted = time.perf_counter() - t0
            spans = support.expected_spans(items) if otel else 0
            if peer is not None:
                support.wait_until(lambda: peer.stats()["spans"] >= spans, 300, f"{spans} spans at the receiver")
            elapsed = time.perf_counter() - t0
            cpu = server.cpu_seconds() - cpu0
            profiled = spy.stop() if spy is not None else False
            text = server.metrics()
        finally:
            server.stop()
            if peer is not None:
                peer.close()
    n = len(items)
    received = support.total(text, "gatewatch_events_received_total")
    rejected = support.total(text, "gatewatch_events_rejected_total")
    dropped = support.total(text, "gatewatch_otel_spans_dropped_total")
    warm_n = min(len(items), 2000)
    if received != n + warm_n or rejected or dropped:
        raise RuntimeError(f"{label}: received {received} of {n + warm_n}, rejected {rejected}, "
                           f"spans dropped {dropped}")
    result = {"label": label, "events": n, "posts": len(payloads), "eps": n / elapsed, "posted_eps": n / posted,
              "cpu_us": cpu / n * 1e6, "cpu_share": cpu / elapsed, "spans": spans,
              "p50_ms": support.percentile(latencies, 0.5) * 1e3, "p99_ms": support.percentile(latencies, 0.99) * 1e3,
              "orjson_us": support.bare_orjson_cpu(payloads) * len(payloads) / n * 1e6, "profiled": profiled}
    print(f"  {label}: {result['eps']:,.0f} events/s end to end, {result['cpu_us']:.1f} µs CPU/event "
          f"(server busy {result['cpu_share']:.0%}), orjson.loads {result['orjson_us']:.1f} µs/event")
    return result


def best(runs: list[dict]) -> dict:
    """The least disturbed run (the machine is shared): highest events/s, its own CPU figure."""
    return max(runs, key=lambda r: r["eps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--single-events", type=int, default=4_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()

    production = support.events(support.mix("production"), args.events)
    capture = support.events(support.mix("capture"), args.events)
    single = support.events(support.mix("production"), args.single_events, seed=2)
    cases = [
        ("all sinks, 100-event batches, 95% successes", production, 100, True, True, 4),
        ("all sinks, 100-event batches, capture mix", capture, 100, True, True, 4),
        ("prometheus only, 100-event batches, 95% successes", production, 100, False, False, 4),
        ("prometheus + rules, 100-event batches, 95% successes", production, 100, False, True, 4),
        ("all sinks, 1-event posts, 95% successes", single, 1, True, True, 8),
    ]
    results: dict[str, list[dict]] = {}
    for round_ in range(args.rounds):  # interleaved rounds: a burst of noise hits one case, not all its runs
        print(f"round {round_ + 1}/{args.rounds}")
        for label, items, per_post, otel, rules, concurrency in cases:
            results.setdefault(label, []).append(run_once(label, items, per_post, otel, rules, concurrency))
    if not args.no_profile:
        PROFILES.mkdir(exist_ok=True)
        raw = PROFILES / "ingest_all_sinks.raw.txt"
        run = run_once("profile (py-spy attached, not a figure)", production, 100, True, True, 4, profile=raw)
        if run["profiled"]:
            summary = support.summarize_profile(raw)
            (PROFILES / "ingest_all_sinks.txt").write_text(
                "py-spy, gatewatch server, all sinks, 100-event batches, 95% successes\n"
                f"({run['events']:,} events; {run['cpu_us']:.1f} µs CPU/event with the profiler attached)\n\n"
                + summary + "\n")
            raw.unlink()
            print(summary)

    b = {label: best(runs) for label, runs in results.items()}
    main_case = b[cases[0][0]]
    record("ingest events/s, 1 core, all sinks (prometheus, rules, every span over OTLP), 100-event batches, "
           "95% successes",
           f"{main_case['eps']:,.0f} ({main_case['cpu_us']:.1f} µs CPU/event; {main_case['spans']:,} spans "
           f"received, 0 dropped; POST p99 {main_case['p99_ms']:.0f} ms)", COMMAND, ">= 20,000 events/s")
    record("ingest vs bare orjson.loads of the same bodies (CPU per event, same run)",
           f"{main_case['cpu_us'] / main_case['orjson_us']:.2f}x orjson.loads "
           f"({main_case['cpu_us']:.1f} vs {main_case['orjson_us']:.1f} µs/event)", COMMAND)
    cap = b[cases[1][0]]
    record("ingest events/s, 1 core, all sinks, 100-event batches, capture mix (55% failures)",
           f"{cap['eps']:,.0f} ({cap['cpu_us']:.1f} µs CPU/event, {cap['cpu_us'] / cap['orjson_us']:.2f}x "
           f"orjson.loads)", COMMAND, ">= 20,000 events/s")
    prom = b[cases[2][0]]
    rules = b[cases[3][0]]
    record("ingest events/s, 1 core, prometheus only / prometheus + rules, 100-event batches, 95% successes",
           f"{prom['eps']:,.0f} ({prom['cpu_us']:.1f} µs CPU/event) / {rules['eps']:,.0f} "
           f"({rules['cpu_us']:.1f} µs CPU/event)", COMMAND)
    one = b[cases[4][0]]
    record("ingest events/s, 1 core, all sinks, 1-event posts (log_format single)",
           f"{one['eps']:,.0f} ({one['cpu_us']:.1f} µs CPU/event, {one['cpu_us'] / one['orjson_us']:.1f}x "
           f"orjson.loads; POST p99 {one['p99_ms']:.1f} ms)", COMMAND)


if __name__ == "__main__":
    main()
