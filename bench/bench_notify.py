"""Alert-to-notification latency through router, claim, SQLite outbox and the webhook sender.

The design budget is p99 event-to-notification under 1 s with group_wait 0. This measures
the notify part of that path: from `alert_receiver.receive()` (what the rule engine calls
after an evaluation) to the request arriving at a webhook receiver running in its own
process, once for alerts arriving one by one and once for a burst of many groups at once.

    .venv/bin/python -m bench.bench_notify
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.results import record

COMMAND = ".venv/bin/python -m bench.bench_notify"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(trickle: int, burst: int) -> tuple[list[float], list[float]]:
    from tests.notify_support import ReceiverProcess, ServiceStack, alert, until

    receiver = ReceiverProcess()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = {"receivers": [{"name": "oncall", "webhook": {"url": receiver.url("/am")}}],
                      "route": {"receiver": "oncall", "group_by": ["..."], "group_wait": "0s"}}
            async with ServiceStack(Path(tmp), config, poll=1.0) as stack:
                sent: dict[str, float] = {}
                for i in range(trickle):
                    a = alert(deployment=f"trickle-{i}")
                    sent[a.labels["deployment"]] = time.time()
                    stack.service.receive([a])
                    await asyncio.sleep(0.02)
                await until(lambda: _count(receiver, trickle), limit=120, what="trickle delivered")
                one_by_one = await _latencies(receiver, sent)
                await receiver.reset()
                sent = {}
                batch = [alert(deployment=f"burst-{i}") for i in range(burst)]
                now = time.time()
                sent = {a.labels["deployment"]: now for a in batch}
                stack.service.receive(batch)
                await until(lambda: _count(receiver, burst), limit=300, what="burst delivered")
                bursty = await _latencies(receiver, sent)
    finally:
        receiver.close()
    return one_by_one, bursty


async def _count(receiver, n: int) -> bool:
    return len(await receiver.accepted()) >= n


async def _latencies(receiver, sent: dict[str, float]) -> list[float]:
    out = []
    for record_ in await receiver.accepted():
        deployment = record_["body"]["alerts"][0]["labels"]["deployment"]
        out.append(record_["at"] - sent[deployment])
    return out


def main() -> None:
    one_by_one, bursty = asyncio.run(_run(trickle=200, burst=500))
    record("notify alert->webhook p99, alerts one by one (group_wait 0)",
           f"{_pct(one_by_one, 0.99) * 1000:.0f} ms (p50 {statistics.median(one_by_one) * 1000:.0f} ms)",
           COMMAND, target="< 1 s")
    record("notify alert->webhook p99, burst of 500 groups (group_wait 0)",
           f"{_pct(bursty, 0.99) * 1000:.0f} ms (p50 {statistics.median(bursty) * 1000:.0f} ms, "
           f"{len(bursty) / max(bursty):.0f} notifications/s)", COMMAND)


if __name__ == "__main__":
    main()
