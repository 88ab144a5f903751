"""With a shared state backend, every task's proxy use adds up in Redis, like the quota does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.events import Event, Kind
from agent.quotas.mapping import ModelTable
from agent.quotas.usage import QuotaTarget, UsageRecorder
from agent.state.redis import RedisState
from tests.redis_support import RedisServer, requires_redis

pytestmark = [pytest.mark.integration, requires_redis]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.close()


def _state(url: str, tmp_path: Path, name: str) -> RedisState:
    cfg = parse_config({"state": {"url": url, "flush_interval": "100ms", "timeout": "500ms",
                                  "connect_timeout": "500ms"}}).state
    return RedisState(cfg, None, tmp_path / f"state-{name}")


async def test_two_tasks_see_the_sum_of_their_use(redis_server, tmp_path):
    info = ModelTable.load().lookup("anthropic.claude-3-haiku-20240307-v1:0")
    states = [_state(redis_server.url, tmp_path, n) for n in ("a", "b")]
    recorders = []
    for state in states:
        await state.start()
        rec = UsageRecorder(state)
        rec.targets = {"d": QuotaTarget("444444444444|eu-central-1|m|on_demand", info)}
        recorders.append(rec)
    try:
        now = time.time()
        for i, rec in enumerate(recorders):  # task a: 2 calls, task b: 3 calls, 1000 tokens each, max_tokens 500
            rec.handle([Event(kind=Kind.REQUEST, time=now, start_time=now, deployment="d", input_tokens=500,
                              output_tokens=500, max_tokens=500) for _ in range(2 + i)])
        base = "444444444444|eu-central-1|m|on_demand"
        for rec in recorders:  # each task's unsent increments reach Redis within a flush interval
            for _ in range(400):  # up to 20 s on a busy machine
                if (await rec.per_minute(now)).get(f"{base}|completed", (0, 0))[1] >= 5:
                    break
                await asyncio.sleep(0.05)
            minute = await rec.per_minute(now)
            assert minute[f"{base}|completed"] == pytest.approx((5000.0, 5.0))
            assert minute[f"{base}|reserved"] == pytest.approx((5000.0, 5.0))
            assert (await rec.per_day(now))[f"{base}|completed"] == pytest.approx(5000.0)
    finally:
        for state in states:
            await state.stop(time.monotonic() + 30)
