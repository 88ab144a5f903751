"""One SQLite database owned by one worker thread: the shared shape of gatewatch's stores.

The event loop must never wait on fsync, and a SQLite connection wants one thread, so
each store (local state, notification outbox) runs every statement on its own
single-thread executor. WAL with synchronous=NORMAL survives a process crash (SIGKILL);
only an OS crash can lose the last commits.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class SqliteWorker:
    def __init__(self, path: str | Path, thread_name: str) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)

    def open(self, schema: str) -> sqlite3.Connection:
        """Open (creating the folder) with WAL; call on the worker thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(schema)
        return db

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


class SqliteStore:
    """Lifecycle shared by the SQLite-backed stores: open on start (on the worker thread),
    close and stop the thread on stop. Subclasses put their statements in `_run` calls and
    may load in-memory mirrors in `_loaded`."""

    schema = ""
    thread_name = "gatewatch-sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._worker = SqliteWorker(self.path, self.thread_name)
        self._db: sqlite3.Connection | None = None

    def _open(self) -> None:
        db = self._worker.open(self.schema)
        self._db = db
        self._loaded(db)

    def _loaded(self, db: sqlite3.Connection) -> None:
        """Called on the worker thread right after the database is opened."""

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._worker.run(fn, *args)

    async def start(self) -> None:
        if self._db is None:
            await self._run(self._open)

    async def stop(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._worker.shutdown()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._db
