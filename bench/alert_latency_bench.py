"""Alert latency: from the event that crosses a threshold to the webhook receiver's arrival.

A gatewatch server (one CPU) runs one rule, `errors` count > 0 per deployment with
`for: 0s`, in a group evaluated every `interval`, and routes alerts to an
Alertmanager-style webhook receiver in its own process on the other CPU, with
`group_wait: 0s` and `group_by: ['...']` (one notification per alert). The bench POSTs one
real failure payload at a time (LiteLLM's `log_format: single`), each from a new
deployment, so each one crosses the threshold of its own alert; the latency is the
receiver's arrival time minus the moment just before the POST. The whole path is real:
ingest, rule window, evaluation, alert state machine, router, SQLite outbox, HTTP delivery.

Evaluation is periodic (as in Prometheus), so the latency is the wait for the next
evaluation (uniform over the interval) plus the pipeline; the figure is given for two
intervals.

    .venv/bin/python -m bench.alert_latency_bench [--alerts 150] [--intervals 0.5 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path

from bench import support
from bench.results import record

COMMAND = ".venv/bin/python -m bench.alert_latency_bench"
ROUTE = "/v1/litellm/events"
RULES = """groups:
  - name: bench
    interval: {interval}s
    rules:
      - alert: BenchDeploymentFailing
        signal: errors
        aggregate: count
        over: 1m
        by: [deployment]
        above: 0
        for: 0s
        labels: {{severity: critical}}
        annotations:
          summary: "{{{{ labels.deployment }}}} fails"
"""


def failure_payloads(n: int, tag: str) -> list[dict]:
    failed = [i for i in support.mix("capture") if i["status"] != "success" and i.get("model_id")]
    items = support.events(failed, n, seed=11)
    for i, item in enumerate(items):
        item["model_id"] = f"bench-{tag}-{i:04d}"
    return items


async def send(url: str, items: list[dict], spacing: float) -> dict[str, float]:
    """POST each payload alone, `spacing` apart (jittered so sends fall all over the interval)."""
    import aiohttp

    sent: dict[str, float] = {}
    rng = random.Random(5)
    async with aiohttp.ClientSession() as session:
        for item in items:
            body = json.dumps(item).encode()
            sent[item["model_id"]] = time.time()
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"ingest answered {response.status}")
            await asyncio.sleep(spacing * rng.uniform(0.5, 1.5))
    return sent


def run(interval: float, n: int, work: Path) -> list[float]:
    server_cpu, client_cpu = support.cpus()
    rules = work / f"rules-{interval}.yml"
    rules.write_text(RULES.format(interval=interval))
    receiver = support.Peer("webhook", work, client_cpu)
    config = dict(support.catalog_config(), rules=[str(rules)], rule_engine={"persist_alerts": False},
                  notify={"receivers": [{"name": "bench", "webhook": {"url": f"{receiver.url}/alerts"}}],
                          "route": {"receiver": "bench", "group_by": ["..."], "group_wait": "0s",
                                    "group_interval": "1m", "repeat_interval": "1h"}})
    server = support.GatewatchServer(config, work, server_cpu, name=f"alerts-{interval}")
    try:
        items = failure_payloads(n, str(interval).replace(".", "_"))
        sent = asyncio.run(send(server.url + ROUTE, items, spacing=0.06))
        support.wait_until(lambda: receiver.stats()["count"] >= n, 120, f"{n} notifications")
        records = support.http_json(f"{receiver.url}/records")
    finally:
        server.stop()
        receiver.close()
    latencies = []
    for rec in records:
        for alert in rec["body"].get("alerts", []):
            deployment = alert.get("labels", {}).get("deployment")
            if deployment in sent and alert.get("status") == "firing":
                latencies.append(rec["at"] - sent.pop(deployment))
    if sent:
        raise RuntimeError(f"{len(sent)} alerts never arrived")
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=150)
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.5, 1.0])
    args = parser.parse_args()
    support.pin(support.cpus()[1])
    with support.workdir("alerts") as tmp:
        results = {interval: run(interval, args.alerts, Path(tmp)) for interval in args.intervals}
    for interval, latencies in results.items():
        p50, p99 = statistics.median(latencies), support.percentile(latencies, 0.99)
        print(f"interval {interval}s: p50 {p50 * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms, "
              f"max {max(latencies) * 1e3:.0f} ms over {len(latencies)} alerts")
        record(f"alert latency, event -> webhook arrival (rule every {interval:g}s, for: 0s, group_wait 0)",
               f"p50 {p50 * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms, max {max(latencies) * 1e3:.0f} ms "
               f"({len(latencies)} alerts; mean wait for the next evaluation alone is {interval * 500:.0f} ms)",
               COMMAND, "p99 <= 1 s")


if __name__ == "__main__":
    main()
