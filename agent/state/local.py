"""Embedded state: SQLite (WAL) in `state_dir`, one process, no server needed.

SQLite calls run on one dedicated thread (agent.sqlitedb.SqliteWorker).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from agent.sqlitedb import SqliteStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL);
CREATE TABLE IF NOT EXISTS counters (key TEXT NOT NULL, field TEXT NOT NULL, value REAL NOT NULL,
                                     expires REAL, PRIMARY KEY (key, field));
CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);
"""


class LocalState(SqliteStore):
    name = "local"
    schema = SCHEMA
    thread_name = "gatewatch-state"

    def __init__(self, state_dir: str | os.PathLike[str], filename: str = "state.db") -> None:
        super().__init__(Path(state_dir) / filename)
        self._claims_since_sweep = 0

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:  # usable before start() (CLI checks open it on demand)
            self._open()
        assert self._db is not None
        return self._db

    # -- JSON documents ---------------------------------------------------------------
    async def get_json(self, key: str) -> Any | None:
        def op() -> Any | None:
            row = self._conn().execute("SELECT value, expires FROM kv WHERE key = ?", (key,)).fetchone()
            if row is None or (row[1] is not None and row[1] < time.time()):
                return None
            return json.loads(row[0])

        return await self._run(op)

    async def put_json(self, key: str, value: Any, ttl: float | None = None) -> None:
        expires = time.time() + ttl if ttl else None
        text = json.dumps(value, separators=(",", ":"))

        def op() -> None:
            self._conn().execute("INSERT OR REPLACE INTO kv (key, value, expires) VALUES (?, ?, ?)",
                                 (key, text, expires))

        await self._run(op)

    async def delete(self, key: str) -> None:
        await self._run(lambda: self._conn().execute("DELETE FROM kv WHERE key = ?", (key,)))

    async def list_json(self, prefix: str) -> dict[str, Any]:
        def op() -> dict[str, Any]:
            now = time.time()
            rows = self._conn().execute(
                "SELECT key, value, expires FROM kv WHERE key >= ? AND key < ?", (prefix, prefix + "\uffff")
            ).fetchall()
            return {k: json.loads(v) for k, v, exp in rows if exp is None or exp >= now}

        return await self._run(op)

    # -- counters -------------------------------------------------------------------
    async def incr_many(self, key: str, amounts: dict[str, float], ttl: float | None = None) -> None:
        expires = time.time() + ttl if ttl else None
        # NaN would be stored as NULL and fail every later write of the key: never store one
        amounts = {f: a for f, a in amounts.items() if math.isfinite(a)}
        if not amounts:
            return

        def op() -> None:
            db = self._conn()
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT INTO counters (key, field, value, expires) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(key, field) DO UPDATE SET value = value + excluded.value, "
                    "expires = excluded.expires",
                    [(key, field, amount, expires) for field, amount in amounts.items()],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(op)

    async def get_counters(self, key: str) -> dict[str, float]:
        def op() -> dict[str, float]:
            now = time.time()
            rows = self._conn().execute("SELECT field, value, expires FROM counters WHERE key = ?", (key,)).fetchall()
            return {f: v for f, v, exp in rows if exp is None or exp >= now}

        return await self._run(op)

    # -- claims ---------------------------------------------------------------------
    async def claim(self, key: str, owner: str, ttl: float) -> bool:
        def op() -> bool:
            now = time.time()
            db = self._conn()
            self._claims_since_sweep += 1
            if self._claims_since_sweep >= 500:  # keep state.db from growing by a row per notification
                self._claims_since_sweep = 0
                db.execute("DELETE FROM claims WHERE expires < ?", (now,))
                db.execute("DELETE FROM kv WHERE expires IS NOT NULL AND expires < ?", (now,))
                db.execute("DELETE FROM counters WHERE expires IS NOT NULL AND expires < ?", (now,))
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT owner, expires FROM claims WHERE key = ?", (key,)).fetchone()
                if row is None or row[1] < now or row[0] == owner:
                    db.execute("INSERT OR REPLACE INTO claims (key, owner, expires) VALUES (?, ?, ?)",
                               (key, owner, now + ttl))
                    db.execute("COMMIT")
                    return True
                db.execute("COMMIT")
                return False
            except BaseException:
                db.execute("ROLLBACK")
                raise

        return await self._run(op)

    async def release(self, key: str, owner: str) -> None:
        await self._run(lambda: self._conn().execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, owner)))

    def healthy(self) -> tuple[bool, str]:
        if self.health.last_error:
            return False, f"degraded: local sqlite {self.path}: writes failing: {self.health.last_error}"
        return True, f"local sqlite {self.path}"
