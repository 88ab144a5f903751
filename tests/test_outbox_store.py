"""The outbox table and the service around it: durability across reopen, idempotent ids,
group order, dead letters, cross-task claims, the final flush on stop, config reload."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.alerts.delivery import backoff
from agent.alerts.outbox import Outbox, OutboxFull
from agent.config import parse_config
from tests.notify_support import FakeClock, ServiceStack, alert, until


def note(nid: str, group: str = "g1", created: float = 100.0) -> dict[str, Any]:
    return {"id": nid, "receiver": "oncall", "group_key": group, "status": "firing", "group_labels": {},
            "common_labels": {}, "common_annotations": {}, "alerts": [], "created_at": created}


async def test_rows_survive_reopen_and_enqueue_is_idempotent(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    box = Outbox(tmp_path / "outbox.db", clock=clock)
    await box.start()
    assert await box.enqueue(note("n1", created=1000.0), [("t1", "oncall"), ("t2", "oncall")]) == 2
    assert await box.enqueue(note("n1", created=1000.0), [("t1", "oncall")]) == 0  # same id: one row
    assert await box.enqueue(note("n2", created=1001.0), [("t1", "oncall")]) == 1
    clock.advance(30)
    assert (box.depth, box.oldest_age()) == (3, 30.0)
    await box.stop(time.monotonic() + 30)

    again = Outbox(tmp_path / "outbox.db", clock=clock)
    await again.start()
    assert again.depth == 3 and again.pending_targets() == {"t1", "t2"}
    row = await again.next_due("t1", clock())
    assert row is not None and row.id == "n1" and row.body["group_key"] == "g1"
    await again.complete(row)
    # delivered ids are remembered: re-enqueueing the same notification does not send it twice
    assert await again.enqueue(note("n1", created=1000.0), [("t1", "oncall")]) == 0
    assert again.depth == 2
    await again.stop(time.monotonic() + 30)


async def test_order_within_a_group_but_not_across_groups(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    box = Outbox(tmp_path / "outbox.db", clock=clock)
    await box.start()
    for nid, group, created in (("a1", "A", 1.0), ("a2", "A", 2.0), ("b1", "B", 3.0)):
        await box.enqueue(note(nid, group, created), [("t", "oncall")])
    first = await box.next_due("t", clock())
    assert first is not None and first.id == "a1"
    await box.reschedule(first, clock() + 60, "HTTP 500", 500)  # a1 backs off...
    second = await box.next_due("t", clock())
    assert second is not None and second.id == "b1"  # ...a2 waits behind it, group B goes on
    assert await box.next_time("t") == 1000.0
    await box.stop(time.monotonic() + 30)


async def test_dead_letters_requeue_drop_and_full(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    box = Outbox(tmp_path / "outbox.db", clock=clock, max_pending=2)
    await box.start()
    await box.enqueue(note("n1"), [("t", "oncall")])
    row = await box.next_due("t", clock())
    assert row is not None
    await box.bury(row, "permanent failure: HTTP 400")
    assert (box.depth, box.dead_count) == (0, 1)
    [dead] = await box.dead_letters()
    assert (dead.id, dead.reason) == ("n1", "permanent failure: HTTP 400")
    assert await box.requeue_dead("n1") == 1 and (box.depth, box.dead_count) == (1, 0)
    await box.enqueue(note("n2"), [("t", "oncall")])
    with pytest.raises(OutboxFull):
        await box.enqueue(note("n3"), [("t", "oncall")])
    row = await box.next_due("t", clock())
    assert row is not None and row.id == "n2"  # n1 was requeued with a fresh age: n2 is older now
    await box.bury(row, "x")
    assert await box.drop_dead("n2") == 1 and box.dead_count == 0
    assert await box.drop_dead("n2") == 0
    await box.stop(time.monotonic() + 30)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    delays = [backoff(n, 1.0, 60.0, rng) for n in range(1, 10)]
    for attempt, delay in enumerate(delays, start=1):
        ceiling = min(60.0, 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered
    assert max(delays) <= 60.0


async def _receiver() -> tuple[TestServer, list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []
    app = web.Application()

    async def hook(request: web.Request) -> web.Response:
        got.append({"path": request.path, "body": await request.json(),
                    "id": request.headers.get("X-Gatewatch-Notification-Id")})
        return web.json_response({})

    app.router.add_post("/{tail:.*}", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server, got


def webhook_config(port: int, path: str = "/am", **route: Any) -> dict[str, Any]:
    return {"receivers": [{"name": "oncall", "webhook": {"url": f"http://127.0.0.1:{port}{path}"}}],
            "route": {"receiver": "oncall", "group_by": ["alertname"], "group_wait": "0s", **route},
            "outbox": {"initial_backoff": "50ms", "max_backoff": "100ms"}}


async def test_two_tasks_one_notification(tmp_path: Path) -> None:
    """Two sidecars on one shared state backend: the claim lets only one of them send."""
    server, got = await _receiver()
    try:
        config = webhook_config(server.port)
        a = ServiceStack(tmp_path / "shared", {**config, "task_id": "task-a"})
        b = ServiceStack(tmp_path / "shared", {**config, "task_id": "task-b"})
        # separate outboxes (each task has its own disk), one state backend (the shared Redis in prod)
        b.service.outbox.path = tmp_path / "b" / "outbox.db"
        async with a, b:
            a.service.receive([alert(deployment="gpt-lab-acct111-use1")])
            await until(lambda: len(got) == 1, what="task a's notification")
            b.service.receive([alert(deployment="gpt-lab-acct111-use1")])
            await until(lambda: b.metric("gatewatch_notifications_total", receiver="oncall",
                                         outcome="deduplicated") == 1, what="task b deduplicated")
            assert len(got) == 1
            assert a.metric("gatewatch_notifications_total", receiver="oncall", outcome="sent") == 1
    finally:
        await server.close()


async def test_stop_queues_and_sends_what_groups_still_owe(tmp_path: Path) -> None:
    """A resolve arriving just before shutdown is not lost to the group_interval wait."""
    server, got = await _receiver()
    try:
        stack = ServiceStack(tmp_path, webhook_config(server.port, group_interval="1h"))
        async with stack:
            stack.service.receive([alert(deployment="d1", at=1.0)])
            await until(lambda: len(got) == 1, what="the firing notification")
            stack.service.receive([alert(deployment="d1", state="resolved", at=1.0, resolved_at=2.0)])
        assert [g["body"]["status"] for g in got] == ["firing", "resolved"]
    finally:
        await server.close()


async def test_reload_switches_targets_and_buries_orphans(tmp_path: Path) -> None:
    server, got = await _receiver()
    try:
        broken = webhook_config(1, "/nowhere")  # port 1: connection refused, rows stay pending
        stack = ServiceStack(tmp_path, broken)
        async with stack:
            stack.service.receive([alert(deployment="d1")])
            await until(lambda: stack.metric("gatewatch_notifications_total", receiver="oncall",
                                             outcome="retry") >= 1, what="a failed attempt")
            new = parse_config({"notify": webhook_config(server.port, "/fixed")})
            await stack.service.reload(new)
            [dead] = await stack.service.outbox.dead_letters()
            assert "no longer configured" in dead.reason
            assert await stack.service.outbox.requeue_dead(dead.id) == 1  # requeued: still the old target
            await stack.service.delivery.sync_targets()
            assert stack.service.outbox.dead_count == 1
            stack.service.receive([alert("Other", deployment="d2")])
            await until(lambda: len(got) == 1, what="delivery through the new target")
            assert got[0]["path"] == "/fixed"
    finally:
        await server.close()


async def test_full_outbox_drops_and_counts_then_retries_the_group(tmp_path: Path) -> None:
    config = webhook_config(1, "/down", group_interval="200ms")  # connection refused: rows stay
    config["outbox"]["max_pending"] = 1
    async with ServiceStack(tmp_path, config) as stack:
        stack.service.receive([alert("A", deployment="d1"), alert("B", deployment="d2")])
        await until(lambda: stack.metric("gatewatch_notifications_total", receiver="oncall", outcome="dropped") >= 1,
                    what="a dropped notification")
        assert stack.metric("gatewatch_outbox_depth") == 1
        # not recorded as sent: the dropped group tries again at its next group_interval
        await until(lambda: stack.metric("gatewatch_notifications_total", receiver="oncall", outcome="dropped") >= 2,
                    what="the dropped group retried")
