"""SIGTERM under ingest load: a real `gatewatch run` process stops accepting, finishes the
requests it is reading, flushes every sink and exits well inside ECS's stop timeout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from itertools import cycle
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.conftest import FIXTURES, ROOT, batch_files, free_port, load_capture
from tests.promtext import total
from tests.test_refresh_s3 import until

pytestmark = pytest.mark.integration

TOKEN = "shutdown-test-token-9f2c"
EVENTS = "/v1/litellm/events"


def batch_bodies() -> list[bytes]:
    return [json.dumps(load_capture(p.name)["body_json"]).encode() for p in batch_files()]


class Gatewatch:
    """A `gatewatch run` subprocess with a recording sink (tests/gatewatch_process.py)."""

    def __init__(self, tmp_path: Path, config: dict) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.record = tmp_path / "record.json"
        self.log = tmp_path / "gatewatch.log"
        config_path = tmp_path / "gatewatch.yaml"
        config_path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "GATEWATCH_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
        self.log_fh = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.gatewatch_process", str(self.record), "run", "--config", str(config_path),
             "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=self.log_fh, stderr=subprocess.STDOUT,
        )

    async def ready(self, session: aiohttp.ClientSession) -> None:
        async def up() -> bool:
            try:
                async with session.get(self.base + "/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not await up():
            assert self.proc.poll() is None, self.log.read_text()
            assert loop.time() < deadline, "gatewatch did not become ready"
            await asyncio.sleep(0.1)

    async def exited(self, within: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self.proc.wait, within)

    def recorded(self) -> dict:
        return json.loads(self.record.read_text())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log_fh.close()


@pytest.fixture
def gatewatch_process(tmp_path):
    started: list[Gatewatch] = []

    def start(config: dict) -> Gatewatch:
        gw = Gatewatch(tmp_path, config)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.close()


class Load:
    """Clients posting real captured batches until the server stops taking them."""

    def __init__(self, session: aiohttp.ClientSession, url: str, bodies: list[bytes]) -> None:
        self.session, self.url, self.bodies = session, url, bodies
        self.accepted = 0
        self.answers: dict[int, int] = {}
        self.refused = 0  # connection refused/reset after the listener closed
        self.stop = False

    async def client(self, offset: int) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        bodies = cycle(self.bodies[offset:] + self.bodies[:offset])
        for _ in range(2000):  # bounded: the test stops the server long before
            if self.stop:
                return
            try:
                async with self.session.post(self.url, data=next(bodies), headers=headers) as response:
                    self.answers[response.status] = self.answers.get(response.status, 0) + 1
                    if response.status == 200:
                        self.accepted += (await response.json())["accepted"]
                    elif response.status == 503:
                        return
            except (aiohttp.ClientError, ConnectionError):
                self.refused += 1
                return


async def slow_post(port: int, body: bytes, go_on: asyncio.Event,
                    half_sent: asyncio.Event | None = None) -> tuple[int, int]:
    """A POST whose body is half sent when SIGTERM arrives: it must still be answered and kept."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST {EVENTS} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    half = len(body) // 2
    writer.write(head.encode() + body[:half])
    await writer.drain()
    if half_sent is not None:
        half_sent.set()
    await go_on.wait()
    writer.write(body[half:])
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout=15)
    writer.close()
    status = int(raw.split(b" ", 2)[1])
    accepted = json.loads(raw.split(b"\r\n\r\n", 1)[1])["accepted"] if status == 200 else 0
    return status, accepted


def proxy_log_lines() -> bytes:
    return b"".join(p.read_bytes() for p in sorted(FIXTURES.glob("logs_*.jsonl")))


async def test_sigterm_under_load_exports_every_accepted_event(gatewatch_process, tmp_path):
    proxy_log = tmp_path / "proxy.log"
    proxy_log.write_bytes(proxy_log_lines())
    gw = gatewatch_process({
        "state_dir": str(tmp_path / "state"),
        "litellm": {"logs": [str(proxy_log)]},
        "server": {"auth_token": "${GATEWATCH_TOKEN}", "shutdown_grace": "8s"},
        "pipeline": {"request_merge_window": "60s"},  # held failures must come out at the flush
        "prometheus": {"process_metrics": False},
    })
    bodies = batch_bodies()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await gw.ready(session)
        load = Load(session, gw.base + EVENTS, bodies)
        clients = [asyncio.create_task(load.client(i)) for i in range(4)]
        await until(lambda: load.accepted >= 2000, within=60, what="load to build up")
        with proxy_log.open("ab") as fh:  # the proxy keeps logging under load
            fh.write(proxy_log_lines())
        go_on, half_sent = asyncio.Event(), asyncio.Event()
        slow = asyncio.create_task(slow_post(gw.port, max(bodies, key=len), go_on, half_sent))
        async with session.get(gw.base + "/metrics") as response:
            before = await response.text()
        tailing = "gatewatch_tail_lag_bytes" in before
        if tailing:  # let the tail catch up, so the checkpoint must end at the end of the file
            deadline = asyncio.get_running_loop().time() + 20
            while total(before, "gatewatch_tail_lag_bytes") or not total(before, "gatewatch_tail_lines_read_total"):
                assert asyncio.get_running_loop().time() < deadline, "the log tail did not catch up"
                await asyncio.sleep(0.1)
                async with session.get(gw.base + "/metrics") as response:
                    before = await response.text()
        await asyncio.wait_for(half_sent.wait(), timeout=60)  # a ceiling: the machine may be busy
        await asyncio.sleep(0.2)  # and the server has taken the connection off its backlog

        sent = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        go_on.set()
        slow_status, slow_accepted = await slow
        await asyncio.wait_for(asyncio.gather(*clients), timeout=20)
        await gw.exited(within=15)
        took = time.monotonic() - sent
        load.stop = True

    log = gw.log.read_text()
    assert gw.proc.returncode == 0, log
    assert took < 10, f"exit took {took:.1f}s"
    assert slow_status == 200 and slow_accepted > 0, "a request in flight at SIGTERM must be finished"
    record = gw.recorded()
    kinds = record["kinds"]
    delivered = record["sources"].get("callback", 0)
    assert delivered == load.accepted + slow_accepted, (record, load.accepted, slow_accepted, load.answers)
    # held failures (60 s merge window) were released by the shutdown flush, not dropped
    assert kinds.get("outcome", 0) >= record["call_ids"] > 0
    assert total(before, "gatewatch_events_received_total", source="callback") <= delivered
    assert "shutting down" in log and "gatewatch stopped" in log
    if tailing:  # the tail checkpoint is on disk and covers every line read
        checkpoint = json.loads((tmp_path / "state" / "tail-checkpoints.json").read_text())
        offsets = [entry["offset"] for entry in checkpoint["files"].values() if entry["path"] == str(proxy_log)]
        assert offsets == [proxy_log.stat().st_size]
        assert record["sources"].get("log", 0) > 0
    assert set(load.answers) <= {200, 503}, load.answers  # never a 5xx other than "shutting down"
