"""Delivery against a real receiver process that fails, hangs and throttles.

Each case runs for the Alertmanager webhook (aiohttp) and for apprise's json:// (requests
on the notify thread pool): 500 then recovery, a hang past the send timeout, 429 with
Retry-After, a permanent 400, and giving up after max_age into the dead letters.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.notify_support import ReceiverProcess, ServiceStack, alert, until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def receiver() -> Iterator[ReceiverProcess]:
    process = ReceiverProcess()
    yield process
    process.close()


@pytest.fixture
async def fresh(receiver: ReceiverProcess) -> ReceiverProcess:
    await receiver.reset()
    return receiver


def notify_config(receiver: ReceiverProcess, kind: str, **outbox: Any) -> dict[str, Any]:
    channel = ({"webhook": {"url": receiver.url("/am")}} if kind == "webhook"
               else {"urls": [f"json://127.0.0.1:{receiver.port}/apprise"]})
    return {
        "receivers": [{"name": "oncall", **channel}],
        "route": {"receiver": "oncall", "group_by": ["..."], "group_wait": "0s", "group_interval": "1h"},
        "outbox": {"initial_backoff": "50ms", "max_backoff": "200ms", "send_timeout": "1s", **outbox},
    }


def note_id(record: dict[str, Any]) -> str:
    return record["headers"]["X-Gatewatch-Notification-Id"]


KINDS = ["webhook", "json"]


@pytest.mark.parametrize("kind", KINDS)
async def test_500_then_recovers(fresh: ReceiverProcess, tmp_path: Path, kind: str) -> None:
    await fresh.control(mode="status", status=500, count=2)
    async with ServiceStack(tmp_path, notify_config(fresh, kind)) as stack:
        stack.service.receive([alert(deployment="gpt-lab-acct111-use1")])
        await until(fresh.accepted, what="delivery after two 500s")
        records = await fresh.received()
        assert [r["answered"] for r in records] == [500, 500, 200]
        assert len({note_id(r) for r in records}) == 1  # the same notification, retried
        assert stack.metric("gatewatch_notifications_total", receiver="oncall", outcome="retry") == 2
        assert stack.metric("gatewatch_notifications_total", receiver="oncall", outcome="sent") == 1
        assert stack.metric("gatewatch_outbox_depth") == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_hanging_receiver_times_out_and_retries(fresh: ReceiverProcess, tmp_path: Path, kind: str) -> None:
    await fresh.control(mode="hang", hang_seconds=30, count=1)
    async with ServiceStack(tmp_path, notify_config(fresh, kind)) as stack:
        stack.service.receive([alert(deployment="gpt-lab-acct222-euw1")])
        await until(fresh.accepted, limit=30, what="delivery after a hang")
        records = await fresh.received()
        assert [r["answered"] for r in records] == ["hang", 200]
        assert note_id(records[0]) == note_id(records[1])
        assert records[1]["at"] - records[0]["at"] >= 1.0  # waited for the 1s send timeout
        assert stack.metric("gatewatch_notifications_total", receiver="oncall", outcome="retry") == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_429_retry_after_is_honoured(fresh: ReceiverProcess, tmp_path: Path, kind: str) -> None:
    await fresh.control(mode="status", status=429, retry_after="2", count=1)
    async with ServiceStack(tmp_path, notify_config(fresh, kind)) as stack:
        stack.service.receive([alert(deployment="gpt-lab-acct333-usw2")])
        await until(fresh.accepted, what="delivery after a 429")
        records = await fresh.received()
        assert [r["answered"] for r in records] == [429, 200]
        # the backoff alone would retry after ~50ms; the server asked for 2s
        assert records[1]["at"] - records[0]["at"] >= 2.0
        assert stack.metric("gatewatch_notifications_total", receiver="oncall", outcome="rate_limited") == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_permanent_4xx_goes_to_dead_letters_at_once(fresh: ReceiverProcess, tmp_path: Path, kind: str) -> None:
    await fresh.control(mode="status", status=404, count=-1)
    async with ServiceStack(tmp_path, notify_config(fresh, kind)) as stack:
        stack.service.receive([alert(deployment="gpt-lab-acct111-use1")])
        await until(lambda: stack.metric("gatewatch_dead_letters") == 1, what="a dead letter")
        [dead] = await stack.service.outbox.dead_letters()
        assert dead.attempts == 1 and dead.last_status == 404 and "permanent" in dead.reason
        assert len(await fresh.received()) == 1
        assert stack.metric("gatewatch_dead_letters_total") == 1
        assert stack.metric("gatewatch_notifications_total", receiver="oncall", outcome="dead") == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_gives_up_after_max_age(fresh: ReceiverProcess, tmp_path: Path, kind: str) -> None:
    await fresh.control(mode="status", status=503, count=-1)
    async with ServiceStack(tmp_path, notify_config(fresh, kind, max_age="1500ms")) as stack:
        stack.service.receive([alert(deployment="gpt-lab-acct111-use1")])
        await until(lambda: stack.metric("gatewatch_dead_letters") == 1, what="giving up")
        [dead] = await stack.service.outbox.dead_letters()
        attempts = len(await fresh.received())
        assert attempts >= 3 and dead.attempts == attempts  # retried with backoff until the age ran out
        assert "gave up" in dead.reason and "HTTP 503" in dead.reason
        assert dead.died_at - dead.created <= 1.5 + 1.0
        assert stack.metric("gatewatch_outbox_depth") == 0
        # requeue it once the receiver is back: delivered with the same id
        await fresh.control(mode="ok")
        assert await stack.service.outbox.requeue_dead(dead.id) == 1
        await stack.service.delivery.sync_targets()
        stack.service.delivery.kick()
        accepted = await until(fresh.accepted, what="delivery of the requeued dead letter")
        assert note_id(accepted[0]) == dead.id
        assert stack.metric("gatewatch_dead_letters") == 0


async def test_a_dead_channel_does_not_delay_another(fresh: ReceiverProcess, tmp_path: Path) -> None:
    await fresh.control(mode="status", status=500, count=-1, paths=["/am"])
    config = notify_config(fresh, "webhook")
    config["receivers"].append({"name": "healthy", "urls": [f"json://127.0.0.1:{fresh.port}/healthy"]})
    config["route"]["routes"] = [{"matchers": ["team=ml"], "receiver": "healthy"}]
    async with ServiceStack(tmp_path, config) as stack:
        stack.service.receive([alert(deployment="a"), alert(deployment="b", team="ml")])
        await until(lambda: stack.metric("gatewatch_notifications_total", receiver="healthy", outcome="sent") == 1,
                    what="the healthy channel delivered")
        assert stack.metric("gatewatch_outbox_depth") == 1  # the broken one is still being retried
        await fresh.control(mode="ok")
        await until(lambda: stack.metric("gatewatch_notifications_total", receiver="oncall", outcome="sent") == 1,
                    what="the broken channel recovered")
        assert stack.metric("gatewatch_outbox_depth") == 0
