"""Shared state on Redis Cluster: events/s per sidecar against a 3-primary cluster, next to one node.

The same run as bench/redis_bench.py (one `gatewatch run` pinned to one CPU, the default
rule pack with its `scope: global` quota windows and budgets, real fixture payloads in
100-event POSTs, the sidecar's CPU counted until every increment is in Redis), against:

- one redis-server (plain TCP, no password): today's `state.url`;
- a Redis Cluster of three primaries, plain TCP with a password;
- the same cluster shape with TLS on every port (ElastiCache Serverless is TLS only).

Rounds are interleaved so that noise on the shared machine hits every target alike; the
best round of each is reported. The cluster nodes are not pinned (three processes), the
single node is pinned to the load generator's CPU, as in redis_bench.py.

    .venv/bin/python -m bench.redis_cluster_bench [--events 60000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any

from bench import support
from bench.redis_bench import Redis, run_once
from bench.results import record

COMMAND = ".venv/bin/python -m bench.redis_cluster_bench"


class ClusterTarget:
    """A RedisClusterServer with the face run_once expects (url, state_config, CPU and command counts)."""

    def __init__(self, workdir: Path, tls: bool) -> None:
        import psutil

        from tests.redis_cluster_support import RedisClusterServer

        self.cluster = RedisClusterServer(workdir, tls=tls).create()
        self.url = self.cluster.url
        self.procs = [psutil.Process(n.proc.pid) for n in self.cluster.nodes if n.proc is not None]

    def state_config(self) -> dict[str, Any]:
        return dict(self.cluster.state_config())

    def cpu_seconds(self) -> float:
        return sum(p.cpu_times().user + p.cpu_times().system for p in self.procs)

    def commands(self) -> int:
        total = 0
        for node in self.cluster.nodes:
            client = node.node_client()
            try:
                total += int(client.info("stats")["total_commands_processed"])
            finally:
                client.close()
        return total

    def close(self) -> None:
        self.cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    items = support.events(support.mix("production"), args.events)
    _server_cpu, client_cpu = support.cpus()
    labels = {"node": "one redis-server", "cluster": "cluster, 3 primaries", "tls": "cluster, 3 primaries, TLS"}
    runs: dict[str, list[dict]] = {k: [] for k in labels}
    with support.workdir("redis-cluster") as tmp:
        targets: dict[str, Any] = {}
        try:
            targets["node"] = Redis(Path(tmp), client_cpu)
            targets["cluster"] = ClusterTarget(Path(tmp) / "cluster", tls=False)
            targets["tls"] = ClusterTarget(Path(tmp) / "tls", tls=True)
            for round_ in range(args.rounds):
                print(f"round {round_ + 1}/{args.rounds}")
                for key, label in labels.items():
                    runs[key].append(run_once(label, items, targets[key]))
        finally:
            for target in targets.values():
                target.close()
    best = {k: max(v, key=lambda r: r["eps"]) for k, v in runs.items()}
    for key, result in best.items():
        if result["errors"] or result["dropped"]:
            raise SystemExit(f"{labels[key]}: {result['errors']:.0f} state errors, {result['dropped']:.0f} drops")
    load = subprocess.run(["cat", "/proc/loadavg"], capture_output=True, text=True).stdout.split()[:1]
    node, cluster, tls = best["node"], best["cluster"], best["tls"]
    record("redis state on a cluster: ingest events/s per sidecar, default rule pack, one node vs 3-primary "
           "cluster (plain / TLS), same run",
           f"one node {node['eps']:,.0f} ({node['cpu_us']:.1f} µs CPU/event) / cluster {cluster['eps']:,.0f} "
           f"({cluster['cpu_us']:.1f} µs) / cluster+TLS {tls['eps']:,.0f} ({tls['cpu_us']:.1f} µs): "
           f"{cluster['eps'] / node['eps']:.2f}x and {tls['eps'] / node['eps']:.2f}x events/s; every increment in "
           f"redis {node['lag'] * 1e3:.0f} / {cluster['lag'] * 1e3:.0f} / {tls['lag'] * 1e3:.0f} ms after the last "
           f"POST; load avg {load[0] if load else '?'}", COMMAND)
    record("redis state on a cluster: flush round trips per sidecar while ingesting",
           f"one node {node['flushes']:.0f} flushes ({node['flush_ms']:.1f} ms avg, {node['commands']} commands) / "
           f"cluster {cluster['flushes']:.0f} ({cluster['flush_ms']:.1f} ms, {cluster['commands']}) / cluster+TLS "
           f"{tls['flushes']:.0f} ({tls['flush_ms']:.1f} ms, {tls['commands']}) for {node['events']:,} events",
           COMMAND, "~1 per flush_interval, not per event")


if __name__ == "__main__":
    main()
