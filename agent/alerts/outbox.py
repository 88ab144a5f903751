"""The notification outbox: SQLite (WAL) in `state_dir`, written before any send.

One row per (notification, target). A row leaves the outbox when the target accepted
it, or moves to the dead letters when retrying can no longer help (permanent 4xx, or
older than `max_age`). Because the row is committed before the first attempt, a crash
or SIGKILL at any point loses nothing: on restart the pending rows are sent again with
the same notification id (at-least-once; receivers de-duplicate by id).

All SQLite work runs on one dedicated thread: the event loop never waits on fsync, and
one thread serializes access as SQLite wants. Depth and age for the metrics are kept in
memory (mirrored from the table) so a scrape does no I/O.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.sqlitedb import SqliteStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT NOT NULL, target TEXT NOT NULL, receiver TEXT NOT NULL, group_key TEXT NOT NULL, body TEXT NOT NULL,
    created REAL NOT NULL, next_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, last_status INTEGER, PRIMARY KEY (id, target));
CREATE INDEX IF NOT EXISTS outbox_by_group ON outbox (target, group_key, created);
CREATE INDEX IF NOT EXISTS outbox_by_age ON outbox (target, created);
CREATE TABLE IF NOT EXISTS dead (
    id TEXT NOT NULL, target TEXT NOT NULL, receiver TEXT NOT NULL, body TEXT NOT NULL,
    created REAL NOT NULL, attempts INTEGER NOT NULL, last_error TEXT, last_status INTEGER,
    reason TEXT NOT NULL, died_at REAL NOT NULL, PRIMARY KEY (id, target));
CREATE TABLE IF NOT EXISTS sent (id TEXT NOT NULL, target TEXT NOT NULL, sent_at REAL NOT NULL,
    PRIMARY KEY (id, target));
"""
SENT_RETENTION = 86400.0  # a re-enqueued notification id already delivered within this window is skipped


@dataclass
class Row:
    id: str
    target: str
    receiver: str
    body: dict[str, Any]
    created: float
    next_at: float
    attempts: int
    last_error: str | None
    last_status: int | None


@dataclass
class DeadRow:
    id: str
    target: str
    receiver: str
    body: dict[str, Any]
    created: float
    attempts: int
    last_error: str | None
    last_status: int | None
    reason: str
    died_at: float


class OutboxFull(Exception):
    """The outbox holds max_pending rows; the new notification was not stored."""


class Outbox(SqliteStore):
    schema = SCHEMA
    thread_name = "gatewatch-outbox"

    def __init__(self, path: str | Path, *, max_pending: int = 10000, clock: Callable[[], float] = time.time,
                 dead_retention: float = 7 * 86400.0) -> None:
        super().__init__(path)
        self.max_pending = max_pending
        self.clock = clock
        self.dead_retention = dead_retention
        self._pending: dict[tuple[str, str], float] = {}  # (id, target) -> created
        self._by_target: Counter[str] = Counter()
        self.dead_count = 0

    # -- lifecycle (SqliteStore: WAL + synchronous=NORMAL, so a SIGKILL loses no commit) ---
    def _loaded(self, db: sqlite3.Connection) -> None:
        self._pending, self._by_target = {}, Counter()
        for i, t, c in db.execute("SELECT id, target, created FROM outbox"):
            self._add((i, t), c)
        self.dead_count = db.execute("SELECT COUNT(*) FROM dead").fetchone()[0]

    # -- metrics (memory only) --------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._pending)

    def oldest_age(self, now: float | None = None) -> float:
        if not self._pending:
            return 0.0
        now = self.clock() if now is None else now
        return max(0.0, now - min(self._pending.values()))

    def pending_targets(self) -> set[str]:
        return {t for t, n in self._by_target.items() if n > 0}

    def count(self, target: str) -> int:
        """Rows waiting for one target (memory: idle workers need no query)."""
        return self._by_target.get(target, 0)

    def _add(self, key: tuple[str, str], created: float) -> None:
        if key not in self._pending:
            self._by_target[key[1]] += 1
        self._pending[key] = created

    def _remove(self, key: tuple[str, str]) -> None:
        if self._pending.pop(key, None) is not None:
            self._by_target[key[1]] -= 1

    # -- writes -----------------------------------------------------------------------
    async def enqueue(self, note: dict[str, Any], targets: list[tuple[str, str]]) -> int:
        """Store one notification for each (target id, receiver); idempotent per (id, target).

        Raises OutboxFull (nothing stored) when max_pending rows wait already.
        """
        if len(self._pending) + len(targets) > self.max_pending:
            raise OutboxFull(f"outbox holds {len(self._pending)} notifications (max_pending {self.max_pending})")
        now = self.clock()
        body = json.dumps(note, separators=(",", ":"))
        created = float(note.get("created_at") or now)

        def op() -> list[tuple[str, str]]:
            db = self._conn()
            added: list[tuple[str, str]] = []
            db.execute("BEGIN IMMEDIATE")
            try:
                for target, receiver in targets:
                    if db.execute("SELECT 1 FROM sent WHERE id = ? AND target = ?", (note["id"], target)).fetchone():
                        continue
                    cur = db.execute(
                        "INSERT OR IGNORE INTO outbox (id, target, receiver, group_key, body, created, next_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (note["id"], target, receiver, note.get("group_key", ""), body, created, now))
                    if cur.rowcount:
                        added.append((note["id"], target))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return added

        added = await self._run(op)
        for key in added:
            self._add(key, created)
        return len(added)

    async def complete(self, row: Row) -> None:
        now = self.clock()

        def op() -> None:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM outbox WHERE id = ? AND target = ?", (row.id, row.target))
                db.execute("INSERT OR REPLACE INTO sent (id, target, sent_at) VALUES (?, ?, ?)",
                           (row.id, row.target, now))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(op)
        self._remove((row.id, row.target))

    async def reschedule(self, row: Row, next_at: float, error: str, status: int | None) -> None:
        row.attempts += 1
        row.next_at, row.last_error, row.last_status = next_at, error, status
        await self._run(lambda: self._conn().execute(
            "UPDATE outbox SET next_at = ?, attempts = ?, last_error = ?, last_status = ? WHERE id = ? AND target = ?",
            (next_at, row.attempts, error, status, row.id, row.target)))

    async def bury(self, row: Row, reason: str) -> None:
        """Move a row to the dead letters (visible on the API and in gatewatch_dead_letters)."""
        now = self.clock()

        def op() -> int:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT OR REPLACE INTO dead (id, target, receiver, body, created, attempts, last_error, "
                    "last_status, reason, died_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (row.id, row.target, row.receiver, json.dumps(row.body, separators=(",", ":")), row.created,
                     row.attempts, row.last_error, row.last_status, reason, now))
                db.execute("DELETE FROM outbox WHERE id = ? AND target = ?", (row.id, row.target))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return db.execute("SELECT COUNT(*) FROM dead").fetchone()[0]

        self.dead_count = await self._run(op)
        self._remove((row.id, row.target))

    # -- reads ------------------------------------------------------------------------
    async def next_due(self, target: str, now: float) -> Row | None:
        """The oldest due row of a target that is first in its alert group.

        Order holds within a group (its "resolved" never overtakes its "firing"); a
        group stuck on a failing message does not hold back the others.
        """

        def op() -> Row | None:
            found = self._conn().execute(
                f"SELECT {_COLUMNS} FROM outbox o WHERE target = ? AND next_at <= ? AND NOT EXISTS ("
                "  SELECT 1 FROM outbox p WHERE p.target = o.target AND p.group_key = o.group_key"
                "  AND (p.created < o.created OR (p.created = o.created AND p.rowid < o.rowid)))"
                " ORDER BY created, rowid LIMIT 1", (target, now)).fetchone()
            return _row(found) if found else None

        return await self._run(op)

    async def next_time(self, target: str) -> float | None:
        """When the target's next row is due (a wake-up hint)."""
        return await self._run(lambda: self._conn().execute(
            "SELECT MIN(next_at) FROM outbox WHERE target = ?", (target,)).fetchone()[0])

    async def older_than(self, target: str, created_before: float, limit: int = 100) -> list[Row]:
        def op() -> list[Row]:
            rows = self._conn().execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE target = ? AND created < ? ORDER BY created LIMIT ?",
                (target, created_before, limit)).fetchall()
            return [_row(r) for r in rows]

        return await self._run(op)

    async def of_target(self, target: str, limit: int = 1000) -> list[Row]:
        def op() -> list[Row]:
            rows = self._conn().execute(f"SELECT {_COLUMNS} FROM outbox WHERE target = ? ORDER BY created LIMIT ?",
                                        (target, limit)).fetchall()
            return [_row(r) for r in rows]

        return await self._run(op)

    async def pending(self, limit: int = 100) -> list[Row]:
        def op() -> list[Row]:
            rows = self._conn().execute(f"SELECT {_COLUMNS} FROM outbox ORDER BY created, rowid LIMIT ?",
                                        (limit,)).fetchall()
            return [_row(r) for r in rows]

        return await self._run(op)

    async def sent_recently(self, limit: int = 100) -> list[tuple[str, str, float]]:
        """(notification id, target id, sent at) of the latest deliveries, newest first (the console)."""
        def op() -> list[tuple[str, str, float]]:
            return [(r[0], r[1], r[2]) for r in self._conn().execute(
                "SELECT id, target, sent_at FROM sent ORDER BY sent_at DESC LIMIT ?", (limit,)).fetchall()]

        return await self._run(op)

    async def dead_letters(self, limit: int = 100) -> list[DeadRow]:
        def op() -> list[DeadRow]:
            rows = self._conn().execute(
                "SELECT id, target, receiver, body, created, attempts, last_error, last_status, reason, died_at "
                "FROM dead ORDER BY died_at DESC LIMIT ?", (limit,)).fetchall()
            return [DeadRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7], r[8], r[9]) for r in rows]

        return await self._run(op)

    async def requeue_dead(self, note_id: str) -> int:
        """Give dead letters of a notification another round (fresh age, attempts reset)."""
        now = self.clock()

        def op() -> tuple[list[tuple[str, str]], int]:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute("SELECT id, target, receiver, body FROM dead WHERE id = ?", (note_id,)).fetchall()
                for rid, target, receiver, body in rows:
                    group_key = json.loads(body).get("group_key", "")
                    db.execute("INSERT OR REPLACE INTO outbox (id, target, receiver, group_key, body, created, next_at)"
                               " VALUES (?, ?, ?, ?, ?, ?, ?)", (rid, target, receiver, group_key, body, now, now))
                db.execute("DELETE FROM dead WHERE id = ?", (note_id,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return [(r[0], r[1]) for r in rows], db.execute("SELECT COUNT(*) FROM dead").fetchone()[0]

        keys, self.dead_count = await self._run(op)
        for key in keys:
            self._add(key, now)
        return len(keys)

    async def drop_dead(self, note_id: str) -> int:
        def op() -> tuple[int, int]:
            db = self._conn()
            cur = db.execute("DELETE FROM dead WHERE id = ?", (note_id,))
            return cur.rowcount, db.execute("SELECT COUNT(*) FROM dead").fetchone()[0]

        removed, self.dead_count = await self._run(op)
        return removed

    async def prune(self) -> None:
        """Forget delivered ids and old dead letters (bounded disk use)."""
        now = self.clock()

        def op() -> int:
            db = self._conn()
            db.execute("DELETE FROM sent WHERE sent_at < ?", (now - SENT_RETENTION,))
            db.execute("DELETE FROM dead WHERE died_at < ?", (now - self.dead_retention,))
            return db.execute("SELECT COUNT(*) FROM dead").fetchone()[0]

        self.dead_count = await self._run(op)


_COLUMNS = "id, target, receiver, body, created, next_at, attempts, last_error, last_status"


def _row(r: tuple) -> Row:
    return Row(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7], r[8])
