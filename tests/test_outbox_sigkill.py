"""kill -9 with 50 notifications pending: a restarted sidecar delivers every one, ids unchanged.

A real `gatewatch run` process gets 50 alerts through its API while the receiver process
answers 503, so 50 notifications wait in the outbox (retrying). SIGKILL, the receiver
recovers, the sidecar restarts on the same state_dir: the receiver ends up with exactly
the 50 notification ids it saw failing, and alerts re-sent after the restart (as the
rule engine does every evaluation) do not page again, because the notification log
survived the kill too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.conftest import ROOT, free_port
from tests.notify_support import ReceiverProcess, until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 50


@pytest.fixture
def receiver() -> Iterator[ReceiverProcess]:
    process = ReceiverProcess()
    yield process
    process.close()


class Sidecar:
    def __init__(self, config: Path, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(config), "--host", "127.0.0.1",
             "--port", str(self.port)],
            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=self.log, stderr=subprocess.STDOUT)

    async def get(self, path: str) -> tuple[int, str]:
        try:
            async with aiohttp.ClientSession() as session, session.get(self.base + path) as response:
                return response.status, await response.text()
        except aiohttp.ClientError:
            return 0, ""

    async def metric(self, name: str) -> float | None:
        status, text = await self.get("/metrics")
        for line in text.splitlines() if status == 200 else []:
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    async def ready(self) -> None:
        async def up() -> bool:
            assert self.proc.poll() is None, "gatewatch exited"
            return (await self.get("/readyz"))[0] == 200

        await until(up, limit=60, what="gatewatch ready")

    async def post_alerts(self, alerts: list[dict]) -> None:
        async with aiohttp.ClientSession() as session, session.post(self.base + "/api/v1/alerts",
                                                                    json=alerts) as response:
            assert response.status == 200, await response.text()

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if not self.log.closed:
            self.log.close()


async def test_sigkill_with_pending_notifications_loses_none(receiver: ReceiverProcess, tmp_path: Path) -> None:
    await receiver.control(mode="status", status=503, count=-1)
    config = tmp_path / "gatewatch.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "attribution": {"ecs_metadata": False},
        "prometheus": {"process_metrics": False},
        "server": {"allow_unauthenticated_writes": True},  # posts alerts without a token
        "notify": {
            "receivers": [{"name": "oncall", "webhook": {"url": receiver.url("/am")}}],
            "route": {"receiver": "oncall", "group_by": ["alertname", "deployment"], "group_wait": "0s",
                      "group_interval": "1h", "repeat_interval": "4h"},
            "outbox": {"initial_backoff": "200ms", "max_backoff": "1s"},
        },
    }))
    alerts = [{"labels": {"alertname": "DeploymentRateLimited", "severity": "critical", "model_group": "gpt-lab",
                          "deployment": f"dep-{i:02d}", "aws_account": "111111111111", "aws_region": "us-east-1"},
               "annotations": {"summary": f"429s on dep-{i:02d}"}, "value": i} for i in range(N)]
    log = tmp_path / "gatewatch.log"

    first = Sidecar(config, log)
    try:
        await first.ready()
        await first.post_alerts(alerts)
        await until(lambda: _equals(first.metric("gatewatch_outbox_depth"), N), what=f"{N} notifications pending")

        async def all_failed_once() -> bool:
            return len({r["headers"]["X-Gatewatch-Notification-Id"] for r in await receiver.received()}) == N

        await until(all_failed_once, limit=30, what="every notification attempted (and refused)")
        first.kill9()
    finally:
        first.stop()
    failed_ids = {r["headers"]["X-Gatewatch-Notification-Id"] for r in await receiver.received()}
    assert not await receiver.accepted()

    await receiver.control(mode="ok")
    second = Sidecar(config, log)
    try:
        await second.ready()

        async def delivered() -> set[str]:
            ids = {r["headers"]["X-Gatewatch-Notification-Id"] for r in await receiver.accepted()}
            return ids if len(ids) >= N else set()

        ids = await until(delivered, limit=60, what=f"{N} notifications delivered after the restart")
        assert ids == failed_ids  # the same notifications, by the same stable ids
        deployments = {r["body"]["alerts"][0]["labels"]["deployment"] for r in await receiver.accepted()}
        assert deployments == {a["labels"]["deployment"] for a in alerts}
        await until(lambda: _equals(second.metric("gatewatch_outbox_depth"), 0), what="outbox drained")

        # the rule engine re-sends firing alerts after a restart: no second page
        await second.post_alerts(alerts)
        await until(lambda: _groups_empty(second), what="router flushed the re-sent alerts")
        assert len(await receiver.accepted()) == len(ids)
        assert await second.metric("gatewatch_dead_letters") == 0
    finally:
        second.stop()


async def _equals(value_coro, expected: float) -> bool:
    return (await value_coro) == expected


async def _groups_empty(sidecar: Sidecar) -> bool:
    import json

    status, text = await sidecar.get("/api/v1/alerts/groups")
    if status != 200:
        return False
    groups = json.loads(text)
    return len(groups) == N and all(g["next_flush_in"] > 60 for g in groups)
