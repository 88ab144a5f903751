"""Scrape: /metrics render time at 20k series, and ingest latency while Prometheus scrapes.

A gatewatch server (one CPU, every default sink) is grown to ~20,000 series the way
memory_bench does it (real payloads from more and more API keys). Then:

1. `GET /metrics` 20 times in a row from the other CPU: wall time per scrape (the render
   runs in an executor thread, so this is what a scraper waits), and the server's CPU per
   render.
2. A steady ingest load (100-event POSTs of real payloads at a fixed rate) for a while
   without any scraper, then the same load while a real Prometheus (the Debian package
   `prometheus`, on the other CPU) scrapes /metrics every second. The POST latency p50/p99 of
   both phases, measured in the same run, and Prometheus's own `scrape_duration_seconds`.

    .venv/bin/python -m bench.scrape_bench [--rate 50] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time
import urllib.parse
from pathlib import Path

import yaml

from bench import support
from bench.memory_bench import grow
from bench.results import record

COMMAND = ".venv/bin/python -m bench.scrape_bench"
ROUTE = "/v1/litellm/events"


class Prometheus:
    """A real Prometheus scraping one target every second, on loopback."""

    def __init__(self, target: str, work: Path, cpu: int) -> None:
        exe = shutil.which("prometheus")
        if exe is None:
            raise SystemExit("prometheus not installed: run scripts/install-test-deps.sh (make bench does)")
        self.port = support.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = work / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1m"},
            "scrape_configs": [{"job_name": "gatewatch", "static_configs": [{"targets": [target]}]}],
        }))
        self.process = support.Process([exe, f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
                                        f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                                       cpu, work / "prometheus.log")
        support.wait_until(lambda: support.http_get(f"{self.url}/-/ready", timeout=2), 60, "prometheus ready")

    def query(self, expr: str) -> float | None:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        result = support.http_json(url)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def close(self) -> None:
        self.process.stop(30)


def load(server: support.GatewatchServer, payloads: list[bytes], rate: float, seconds: float) -> list[float]:
    n = int(rate * seconds)
    bodies = [payloads[i % len(payloads)] for i in range(n)]
    return asyncio.run(support.post_all(server.url + ROUTE, bodies, concurrency=8, rate=rate))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="100-event POSTs per second")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--series", type=int, default=20_000)
    args = parser.parse_args()
    server_cpu, client_cpu = support.cpus()
    support.pin(client_cpu)
    payloads = support.bodies(support.events(support.mix("production"), 10_000, seed=7), 100)
    with support.workdir("scrape") as tmp:
        work = Path(tmp)
        server = support.GatewatchServer(support.catalog_config(), work, server_cpu)
        prometheus = None
        try:
            asyncio.run(support.post_all(server.url + ROUTE, payloads, 4))  # the load's own series first
            ((series, _, _),) = grow(server, [args.series])
            walls = []
            cpu0 = server.cpu_seconds()
            for _ in range(20):
                started = time.perf_counter()
                size = len(server.metrics())
                walls.append(time.perf_counter() - started)
            render_cpu = (server.cpu_seconds() - cpu0) / 20
            quiet = load(server, payloads, args.rate, args.seconds)
            prometheus = Prometheus(f"127.0.0.1:{server.port}", work, client_cpu)
            support.wait_until(lambda: prometheus.query('up{job="gatewatch"}') == 1, 60, "first scrape")
            started = time.time()
            scraped = load(server, payloads, args.rate, args.seconds)
            window = f"{max(1, round(time.time() - started))}s"
            scrapes = prometheus.query(f'count_over_time(scrape_duration_seconds{{job="gatewatch"}}[{window}])')
            scrape_max = prometheus.query(f'max_over_time(scrape_duration_seconds{{job="gatewatch"}}[{window}])')
            scrape_avg = prometheus.query(f'avg_over_time(scrape_duration_seconds{{job="gatewatch"}}[{window}])')
            samples = prometheus.query('scrape_samples_scraped{job="gatewatch"}')
            up_min = prometheus.query(f'min_over_time(up{{job="gatewatch"}}[{window}])')
        finally:
            if prometheus is not None:
                prometheus.close()
            server.stop()
    p50, p99 = support.percentile(walls, 0.5), support.percentile(walls, 0.99)
    print(f"/metrics at {series:,} series ({size / 1e6:.1f} MB): p50 {p50 * 1e3:.0f} ms, "
          f"max {max(walls) * 1e3:.0f} ms, server CPU {render_cpu * 1e3:.0f} ms/render")
    q50, q99 = support.percentile(quiet, 0.5), support.percentile(quiet, 0.99)
    s50, s99 = support.percentile(scraped, 0.5), support.percentile(scraped, 0.99)
    print(f"ingest POST latency without scraper p50 {q50 * 1e3:.1f} ms p99 {q99 * 1e3:.1f} ms; "
          f"with Prometheus every 1s p50 {s50 * 1e3:.1f} ms p99 {s99 * 1e3:.1f} ms; {scrapes} scrapes, "
          f"scrape_duration avg {scrape_avg} max {scrape_max}, up min {up_min}")
    if not scrapes or up_min != 1:
        raise RuntimeError(f"Prometheus did not scrape cleanly: {scrapes} scrapes, min(up) {up_min}")
    record(f"/metrics render at {series:,} series (GET from another CPU, 20 in a row)",
           f"{p50 * 1e3:.0f} ms median, {p99 * 1e3:.0f} ms p99 ({size / 1e6:.1f} MB; server CPU "
           f"{render_cpu * 1e3:.0f} ms/render)", COMMAND, "<= 200 ms at 20k series")
    events_s = args.rate * 100
    record(f"ingest POST p99 (100 events, {events_s:,.0f} events/s) while Prometheus scrapes every 1 s, "
           f"{series:,} series",
           f"{s99 * 1e3:.0f} ms (p50 {s50 * 1e3:.0f} ms) vs {q99 * 1e3:.0f} ms (p50 {q50 * 1e3:.0f} ms) without a "
           f"scraper, same run; Prometheus scrape_duration avg {scrape_avg * 1e3:.0f} ms, max "
           f"{scrape_max * 1e3:.0f} ms over {scrapes:.0f} scrapes of {samples:,.0f} samples", COMMAND)


if __name__ == "__main__":
    main()
