"""The outbox's notification JSON: rows written by an earlier version still load, and the
shape written today stays the same to the byte (a rolling deploy has old and new tasks
reading one outbox; the console and the API show these bodies)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from agent.alerts.notification import AlertItem, Notification
from agent.alerts.outbox import Outbox
from agent.alerts.templates import resolved_text

# a resolved cooldown as the outbox stored it on 2026-12-07 (after issue 18: unit, held_for,
# kept_for, no_data, task, window in each alert), exactly as `Outbox.enqueue` wrote it
TODAY = (
    '{"id":"0f3c2b1a9e8d7c6b5a4f3e2d","receiver":"oncall","group_key":"{}:{alertname=\\"DeploymentCooledDown\\"}",'
    '"status":"resolved","group_labels":{"alertname":"DeploymentCooledDown"},'
    '"common_labels":{"alertname":"DeploymentCooledDown","severity":"warning","deployment":"gpt-lab-acct111-use1"},'
    '"common_annotations":{"summary":"gpt-lab-acct111-use1 was cooled down"},'
    '"alerts":[{"status":"resolved","labels":{"alertname":"DeploymentCooledDown","severity":"warning",'
    '"deployment":"gpt-lab-acct111-use1"},"annotations":{"summary":"gpt-lab-acct111-use1 was cooled down"},'
    '"starts_at":1765100000.0,"ends_at":1765100375.0,"value":0.0,"fingerprint":"5d0c3e4b1a2f6789",'
    '"unit":"cooldowns","held_for":0.0,"kept_for":45.0,"no_data":false,"task":"task-1","window":300.0}],'
    '"created_at":1765100380.0,"external_url":"http://gatewatch:9464/console","truncated":0,"dashboard_url":""}'
)
NOW = 1765100400.0


async def stored_and_read_back(tmp_path: Path, body: str) -> dict:
    """Through a real outbox file: written, closed, reopened by a new process's Outbox, read."""
    box = Outbox(tmp_path / "outbox.db", clock=lambda: NOW)
    await box.start()
    assert await box.enqueue(json.loads(body), [("slack", "oncall")]) == 1
    await box.stop(time.monotonic() + 30)
    again = Outbox(tmp_path / "outbox.db", clock=lambda: NOW)
    await again.start()
    try:
        row = await again.next_due("slack", NOW)
        assert row is not None
        return row.body
    finally:
        await again.stop(time.monotonic() + 30)


async def test_a_row_in_todays_shape_loads_and_is_written_back_the_same(tmp_path: Path) -> None:
    note = Notification.from_dict(await stored_and_read_back(tmp_path, TODAY))
    [item] = note.alerts
    assert isinstance(item, AlertItem) and item.status == "resolved" and item.name == "DeploymentCooledDown"
    assert (item.unit, item.held_for, item.kept_for, item.no_data, item.task, item.window) == (
        "cooldowns", 0.0, 45.0, False, "task-1", 300.0)
    assert item.fired_for() == 375.0
    assert resolved_text(item) == ("resolved · last occurrence 0s after it began, then none for its 5m window, "
                                   "then kept firing 45s (keep_firing_for)")
    assert json.dumps(note.to_dict(), separators=(",", ":")) == TODAY


async def test_a_row_from_before_issue_18_loads_with_the_defaults(tmp_path: Path) -> None:
    old = json.loads(TODAY)
    for key in ("unit", "held_for", "kept_for", "no_data", "task", "window"):
        del old["alerts"][0][key]
    note = Notification.from_dict(await stored_and_read_back(tmp_path, json.dumps(old)))
    [item] = note.alerts
    assert (item.unit, item.held_for, item.kept_for, item.no_data, item.task, item.window) == (
        "", None, None, False, "", None)
    assert resolved_text(item) == "resolved after 6m 15s"
