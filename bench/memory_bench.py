"""Memory: RSS of the gatewatch process at 1k, 20k and 100k active series, and a flood.

Series are what Prometheus stores: one per sample line of `/metrics` (histogram buckets,
`_sum`, `_count` and `_created` included). They grow the way they grow in production: real
fixture payloads (successful calls) from more and more API keys (`api_key_alias` is a
default label), 100 events per POST, until the exposition passes each mark; the server's
RSS (psutil) is read there. The process runs every default sink (Prometheus, the default
rule pack, whose budget rules also track keys); OTel keeps no per-series state.

The flood: a second server with every optional high-cardinality label on (user,
end_user, hashed_api_key) and `labels.series_limit: 1000`, fed 50,000 events each from a
new key and user. Past the limit new label sets fold into `__overflow__` (counted on
`gatewatch_series_overflow_total`), so series must stop growing: the run fails if any
litellm_* metric holds more than limit + 1 (overflow) label sets, or if the series count
grows by more than 1% between 20,000 and 40,000 distinct users. It runs once with every
default sink and once with the rule engine off, to tell the sinks' memory apart.

    .venv/bin/python -m bench.memory_bench
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from pathlib import Path

from bench import support
from bench.results import record

COMMAND = ".venv/bin/python -m bench.memory_bench"
ROUTE = "/v1/litellm/events"
MIB = 1024 * 1024
LIMIT = 1000  # labels.series_limit of the flood


def label_sets(text: str) -> int:
    """The most label sets any litellm_* metric holds (histogram buckets folded into one set)."""
    from prometheus_client.parser import text_string_to_metric_families

    widest = 0
    for family in text_string_to_metric_families(text):
        if family.name.startswith("litellm_"):
            sets = {tuple(sorted((k, v) for k, v in s.labels.items() if k != "le")) for s in family.samples}
            widest = max(widest, len(sets))
    return widest


def by_key(i: int, item: dict) -> None:
    item["metadata"]["user_api_key_alias"] = f"key-{i:06d}"
    item["metadata"]["user_api_key_team_id"] = f"team-{i % 25}"


def flood(i: int, item: dict) -> None:
    md = item["metadata"]
    md["user_api_key_alias"] = f"key-{i:06d}"
    md["user_api_key_hash"] = hashlib.sha256(str(i).encode()).hexdigest()
    md["user_api_key_user_id"] = f"user-{i:06d}"
    item["end_user"] = f"end-user-{i:06d}"


def post(server: support.GatewatchServer, items: list[dict]) -> None:
    asyncio.run(support.post_all(server.url + ROUTE, support.bodies(items, 100), 2))


def grow(server: support.GatewatchServer, marks: list[int], start: int = 0) -> list[tuple[int, int, int]]:
    """Send events from new keys until the exposition passes each mark in turn; returns
    (series, rss bytes, keys so far) at each mark."""
    base = support.mix("success")
    out = []
    keys = start
    for mark in marks:
        while True:
            text = server.metrics()
            series = support.series_count(text)
            if series >= mark:
                out.append((series, server.rss(), keys))
                print(f"  {series:,} series, RSS {server.rss() / MIB:.0f} MiB ({keys:,} keys)")
                break
            # at ~100 series per key, aim about half way to the mark per round
            n = max(1, (mark - series) // 200)
            post(server, support.events(base, n, seed=keys, mutate=lambda i, item, k=keys: by_key(k + i, item)))
            keys += n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=40_000)
    args = parser.parse_args()
    server_cpu, client_cpu = support.cpus()
    support.pin(client_cpu)
    config = support.catalog_config()
    with support.workdir("memory") as tmp:
        server = support.GatewatchServer(config, Path(tmp), server_cpu)
        try:
            idle_rss, idle_series = server.rss(), support.series_count(server.metrics())
            marks = grow(server, [1_000, 20_000, 100_000])
        finally:
            server.stop()
        print(f"idle: {idle_series} series, RSS {idle_rss / MIB:.0f} MiB")
        floods = {rules: run_flood(Path(tmp), server_cpu, rules, args.flood) for rules in (True, False)}
    for points in floods.values():
        if points[-1][1] > points[-2][1] * 1.01:
            raise RuntimeError(f"series kept growing past the limit: {points[-2][1]} -> {points[-1][1]}")
    (s1, r1, k1), (s20, r20, k20), (s100, r100, k100) = marks
    record("RSS at ~1k / 20k / 100k active series (all default sinks; series = /metrics sample lines)",
           f"{r1 / MIB:.0f} / {r20 / MIB:.0f} / {r100 / MIB:.0f} MiB at {s1:,} / {s20:,} / {s100:,} series "
           f"({k1:,} / {k20:,} / {k100:,} API keys; idle {idle_rss / MIB:.0f} MiB)", COMMAND,
           "<= 150 MiB at 20k series")
    for rules, label in ((True, "all default sinks"), (False, "rule engine off")):
        first, mid, last = floods[rules]
        record(f"flood of distinct keys/users, {label} (optional user/end_user/key-hash labels on, "
               "series_limit 1000)",
               f"{first[0]:,} -> {mid[0]:,} -> {last[0]:,} distinct: {first[1]:,} -> {mid[1]:,} -> {last[1]:,} "
               f"series, RSS {first[2] / MIB:.0f} -> {mid[2] / MIB:.0f} -> {last[2] / MIB:.0f} MiB; "
               f"{last[3]:,.0f} label sets folded into __overflow__", COMMAND, "bounded by the series limit")


def run_flood(tmp: Path, cpu: int, rules: bool, n: int) -> list[tuple[int, int, int, float]]:
    """(distinct keys so far, series, rss, overflowed label sets) at 5k, 20k and n distinct keys/users."""
    config = dict(support.catalog_config(), rule_engine={"enabled": rules},
                  labels={"optional": ["user", "end_user", "hashed_api_key"], "series_limit": LIMIT})
    server = support.GatewatchServer(config, tmp, cpu, name=f"flood-rules-{rules}")
    points = []
    try:
        base = support.mix("success")
        sent = 0
        for checkpoint in (5_000, 20_000, n):
            post(server, support.events(base, checkpoint - sent, seed=sent,
                                        mutate=lambda i, item, s=sent: flood(s + i, item)))
            sent = checkpoint
            text = server.metrics()
            widest = label_sets(text)
            if widest > LIMIT + 1:
                raise RuntimeError(f"a litellm_* metric holds {widest} label sets, over the limit {LIMIT} + overflow")
            overflow = support.total(text, "gatewatch_series_overflow_total")
            points.append((sent, support.series_count(text), server.rss(), overflow))
            print(f"  flood (rules {'on' if rules else 'off'}): {sent:,} distinct keys/users -> "
                  f"{points[-1][1]:,} series, RSS {points[-1][2] / MIB:.0f} MiB, "
                  f"{overflow:,.0f} label sets folded into __overflow__")
    finally:
        server.stop()
    return points


if __name__ == "__main__":
    main()
