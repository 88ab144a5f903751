"""Issue 19 G: storage faults are one clear line or a recovery, never a crash loop.

An unusable state_dir stops `gatewatch run` with one line naming the path (exit 2); a
corrupt state.db / outbox.db is moved aside (kept) and recreated while the sidecar
serves; a full disk (SQLite's own SQLITE_FULL, made with `PRAGMA max_page_count`) fails
state writes loudly (metric, /readyz degraded) while ingest and /metrics go on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ROOT
from tests.promtext import samples, total
from tests.test_bad_input_ingest import good_items, metrics, post


def run_gatewatch(tmp_path: Path, state_dir: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "gw.yaml"
    config.write_text(json.dumps({"state_dir": state_dir, "rules": []}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GATEWATCH_"))}
    return subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(config), "--port", "0",
                           "--host", "127.0.0.1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case", ["parent_is_a_file", "is_a_file"])
def test_unusable_state_dir_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    state_dir = str(blocker / "state") if case == "parent_is_a_file" else str(blocker)
    result = run_gatewatch(tmp_path, state_dir)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert state_dir in lines[0] and ("Not a directory" in lines[0] or "File exists" in lines[0]), lines[0]


@pytest.fixture
def notify_cfg() -> dict:
    return {"notify": {"receivers": [{"name": "log", "urls": ["json://127.0.0.1:9/x"]}],
                       "route": {"receiver": "log"}}}


async def test_corrupt_state_and_outbox_are_moved_aside_and_recreated(gatewatch_server, tmp_path, notify_cfg):
    state_dir = tmp_path / "corrupt"
    state_dir.mkdir()
    (state_dir / "state.db").write_bytes(b"this is not sqlite " * 500)
    (state_dir / "outbox.db").write_bytes(b"\x00garbage" * 700)
    gw, url = await gatewatch_server({"state_dir": str(state_dir), "rules": [], **notify_cfg})
    status, answer = await post(url, json.dumps(good_items(3)))
    assert status == 200 and answer["accepted"] == 3
    kept = sorted(p.name.split(".corrupt-")[0] for p in state_dir.iterdir() if ".corrupt-" in p.name)
    assert kept == ["outbox.db", "state.db"]
    for name in ("state.db", "outbox.db"):
        assert (state_dir / name).read_bytes()[:16] == b"SQLite format 3\x00"
    rows = await metrics(url)
    assert total(rows, "gatewatch_storage_recovered_total", file="state.db") == 1
    assert total(rows, "gatewatch_storage_recovered_total", file="outbox.db") == 1
    async with aiohttp.ClientSession() as session, session.get(url + "/readyz") as response:
        body = await response.json()
        assert response.status == 200, body
    # a silence written through the fresh file survives (state works after the recovery)
    await gw.state.put_json("probe", {"ok": 1})
    assert await gw.state.get_json("probe") == {"ok": 1}


async def test_disk_full_fails_state_writes_loudly_and_ingest_goes_on(gatewatch_server, tmp_path):
    gw, url = await gatewatch_server({"state_dir": str(tmp_path / "full")})  # default rule pack: budgets
    await gw.state.put_json("warm", {"x": 1})
    db = gw.state._conn()
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages}")  # SQLite answers SQLITE_FULL from now on
    with pytest.raises(Exception, match="full"):
        await gw.state.put_json("big", {"x": "y" * 200000})
    status, answer = await post(url, json.dumps(good_items(4)))
    assert status == 200 and answer["accepted"] == 4
    async with aiohttp.ClientSession() as session, session.get(url + "/readyz") as response:
        body = await response.json()
    assert "degraded" in body["checks"]["state"]["detail"] and "full" in body["checks"]["state"]["detail"]
    assert body["checks"]["storage"]["ok"] is False
    rows = await metrics(url)
    assert total(rows, "gatewatch_storage_errors_total", file="state.db") >= 1
    assert total(rows, "litellm_deployment_total_requests_total") == 4
    await gw.rule_engine.evaluate_all()  # budgets flush to the full state: nothing raises
    db.execute("PRAGMA max_page_count=1073741823")  # space again: the next write clears the state
    await gw.state.put_json("after", {"x": 1})
    async with aiohttp.ClientSession() as session, session.get(url + "/readyz") as response:
        body = await response.json()
    assert body["checks"]["storage"]["ok"] is True, body
    assert "degraded" not in body["checks"]["state"]["detail"]
    assert samples  # imported for callers


async def test_disk_full_silence_is_503_not_500(gatewatch_server, tmp_path, notify_cfg):
    gw, url = await gatewatch_server({"state_dir": str(tmp_path / "full2"), "rules": [],
                                      "server": {"allow_unauthenticated_writes": True}, **notify_cfg})
    await gw.state.put_json("warm", {"x": 1})
    db = gw.state._conn()
    db.execute(f"PRAGMA max_page_count={db.execute('PRAGMA page_count').fetchone()[0]}")
    silence = {"matchers": [{"name": "alertname", "value": "X" * 300000, "isRegex": False}],
               "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2100-01-01T00:00:00Z",
               "createdBy": "me", "comment": "c"}
    status, answer = await post(url, json.dumps(silence), "/api/v1/silences")
    assert status == 503 and "could not be stored" in answer["error"], answer
    async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as response:
        assert response.status == 200
