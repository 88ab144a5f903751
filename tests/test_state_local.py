"""The embedded state backend: documents, counters and claims survive a reopen."""

from __future__ import annotations

import time

from agent.state.local import LocalState


async def test_documents_counters_and_claims(tmp_path):
    state = LocalState(tmp_path)
    await state.start()
    await state.put_json("silence/1", {"comment": "deploy"})
    await state.incr_many("budget/2026-11", {"team=a": 1.5, "team=b": 2.0})
    await state.incr_many("budget/2026-11", {"team=a": 0.25})
    assert await state.claim("notify/x", "task-1", ttl=60) is True
    assert await state.claim("notify/x", "task-2", ttl=60) is False
    assert await state.claim("notify/x", "task-1", ttl=60) is True  # the owner keeps it
    await state.stop(time.monotonic() + 30)

    reopened = LocalState(tmp_path)
    await reopened.start()
    assert await reopened.get_json("silence/1") == {"comment": "deploy"}
    assert await reopened.list_json("silence/") == {"silence/1": {"comment": "deploy"}}
    assert await reopened.get_counters("budget/2026-11") == {"team=a": 1.75, "team=b": 2.0}
    assert await reopened.claim("notify/x", "task-2", ttl=60) is False
    await reopened.release("notify/x", "task-1")
    assert await reopened.claim("notify/x", "task-2", ttl=60) is True
    await reopened.stop(time.monotonic() + 30)


async def test_expired_claims_are_taken_over(tmp_path):
    state = LocalState(tmp_path)
    await state.start()
    assert await state.claim("k", "a", ttl=0.01) is True
    import asyncio

    await asyncio.sleep(0.05)
    assert await state.claim("k", "b", ttl=60) is True
    await state.stop(time.monotonic() + 30)
