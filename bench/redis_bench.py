"""Shared state: events/s per sidecar with the Redis backend on, against the local backend, same run.

One `gatewatch run` pinned to one CPU, the default rule pack (its quota rules are
`scope: global`, its budgets add up in the backend) and Prometheus, fed real fixture
payloads (95% successes, fresh call ids, times moved to now) in 100-event POSTs from the
other CPU. Once with the local backend (SQLite in state_dir), once with `state.url`
pointing at a redis-server (on the other CPU, as a remote Redis would be). events/s is
over the POSTs; the server's CPU is counted until the sidecar has flushed everything
(`gatewatch_state_queued_increments` back to 0), so CPU per event includes getting the
pre-aggregates into Redis, and the time from the last POST to "all in Redis" is reported
(at most one `flush_interval`, 1 s, plus a round trip).

Also reported: flush round trips (expected ~1 per `flush_interval`, not one per event),
their duration, and the redis-server CPU the sidecar cost, per event.

    .venv/bin/python -m bench.redis_bench [--events 30000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import time
from pathlib import Path

from bench import support
from bench.results import record

COMMAND = ".venv/bin/python -m bench.redis_bench"
ROUTE = "/v1/litellm/events"


class Redis:
    def __init__(self, workdir: Path, cpu: int | None) -> None:
        import psutil
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not installed (make test-deps)")
        self.port = support.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = support.Process([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                        "--appendonly", "no"], cpu, workdir / "redis.log")
        self.client = redis.Redis.from_url(self.url)
        support.wait_until(self._ping, 30, "redis-server")
        self.ps = psutil.Process(self.process.pid)

    def _ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            return False

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def commands(self) -> int:
        return int(self.client.info("stats")["total_commands_processed"])

    def close(self) -> None:
        self.client.close()
        self.process.stop(10)


def config(redis_url: str | None, **state: str) -> dict:
    data = support.catalog_config()
    data["prometheus"] = {"process_metrics": True}
    if redis_url:
        data["state"] = {"url": redis_url, "key_prefix": "bench:", "flush_interval": "1s", **state}
    return data


def run_once(label: str, items: list[dict], redis: Redis | None, concurrency: int = 4) -> dict:
    server_cpu, client_cpu = support.cpus()
    support.pin(client_cpu)
    payloads = support.bodies(support.retime(items), 100)
    warm = support.bodies(support.events(items, min(len(items), 2000), seed=99), 100)
    with support.workdir("redis") as tmp:
        where = redis.state_config() if redis is not None and hasattr(redis, "state_config") else {}
        where.pop("url", None)
        server = support.GatewatchServer(config(redis.url if redis else None, **where), Path(tmp), server_cpu)
        try:
            url = server.url + ROUTE
            asyncio.run(support.post_all(url, warm, concurrency))
            if redis is not None:
                support.wait_until(lambda: support.total(server.metrics(), "gatewatch_state_queued_increments") == 0,
                                   60, "warm-up flushed")
            before = support.samples(server.metrics())
            redis_cpu0 = redis.cpu_seconds() if redis else 0.0
            commands0 = redis.commands() if redis else 0
            cpu0, t0 = server.cpu_seconds(), time.perf_counter()
            asyncio.run(support.post_all(url, payloads, concurrency))
            posted = time.perf_counter() - t0
            if redis is not None:
                support.wait_until(lambda: support.total(server.metrics(), "gatewatch_state_queued_increments") == 0,
                                   120, "every increment flushed")
            elapsed = time.perf_counter() - t0
            cpu = server.cpu_seconds() - cpu0
            redis_cpu = (redis.cpu_seconds() - redis_cpu0) if redis else 0.0
            commands = (redis.commands() - commands0) if redis else 0
            after = support.samples(server.metrics())
        finally:
            server.stop()
    n = len(items)

    def delta(name: str) -> float:
        return (sum(v for (k, _), v in after.items() if k == name)
                - sum(v for (k, _), v in before.items() if k == name))

    result = {"label": label, "events": n, "eps": n / posted, "lag": elapsed - posted, "cpu_us": cpu / n * 1e6,
              "flushes": delta("gatewatch_state_flush_seconds_count"),
              "flush_ms": delta("gatewatch_state_flush_seconds_sum") * 1e3 / max(1.0, delta(
                  "gatewatch_state_flush_seconds_count")),
              "increments": delta("gatewatch_state_flushed_increments_total"), "elapsed": elapsed,
              "redis_cpu_us": redis_cpu / n * 1e6, "commands": commands,
              "errors": delta("gatewatch_state_errors_total"),
              "dropped": delta("gatewatch_state_dropped_increments_total")}
    extra = (f"; all in redis {result['lag'] * 1e3:.0f} ms after the last POST; "
             f"{result['flushes']:.0f} round trips ({result['flush_ms']:.1f} ms avg), "
             f"{result['increments']:,.0f} increments, {commands} redis commands, redis CPU "
             f"{result['redis_cpu_us']:.2f} µs/event" if redis else "")
    print(f"  {label}: {result['eps']:,.0f} events/s, {result['cpu_us']:.1f} µs CPU/event{extra}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    items = support.events(support.mix("production"), args.events)
    _server_cpu, client_cpu = support.cpus()
    runs: dict[str, list[dict]] = {"local": [], "redis": []}
    with support.workdir("redis-server") as tmp:
        redis = Redis(Path(tmp), client_cpu)
        try:
            for round_ in range(args.rounds):  # interleaved: noise on the shared machine hits both
                print(f"round {round_ + 1}/{args.rounds}")
                runs["local"].append(run_once("local backend (SQLite)", items, None))
                runs["redis"].append(run_once("redis backend", items, redis))
        finally:
            redis.close()
    local = max(runs["local"], key=lambda r: r["eps"])
    shared = max(runs["redis"], key=lambda r: r["eps"])
    if shared["errors"] or shared["dropped"]:
        raise SystemExit(f"redis run had {shared['errors']:.0f} state errors, {shared['dropped']:.0f} drops")
    load = subprocess.run(["cat", "/proc/loadavg"], capture_output=True, text=True).stdout.split()[:1]
    record("redis state: ingest events/s per sidecar, default rule pack (global quota windows, budgets), "
           "local backend vs redis backend, same run",
           f"local {local['eps']:,.0f} ({local['cpu_us']:.1f} µs CPU/event) / redis {shared['eps']:,.0f} "
           f"({shared['cpu_us']:.1f} µs CPU/event incl. flushing): {shared['eps'] / local['eps']:.2f}x events/s, "
           f"{shared['cpu_us'] / local['cpu_us']:.2f}x CPU/event; every increment in redis "
           f"{shared['lag'] * 1e3:.0f} ms after the last POST; load avg {load[0] if load else '?'}", COMMAND)
    record("redis state: round trips to redis per sidecar while ingesting",
           f"{shared['flushes']:.0f} flushes in {shared['elapsed']:.1f} s ({shared['flush_ms']:.1f} ms avg) for "
           f"{shared['events']:,} events: {shared['increments']:,.0f} merged increments, {shared['commands']} "
           f"redis commands; redis-server CPU {shared['redis_cpu_us']:.2f} µs/event", COMMAND,
           "~1 per flush_interval, not per event")


if __name__ == "__main__":
    main()
