"""One SQLite database owned by one worker thread: the shared shape of gatewatch's stores.

The event loop must never wait on fsync, and a SQLite connection wants one thread, so
each store (local state, notification outbox) runs every statement on its own
single-thread executor. WAL with synchronous=NORMAL survives a process crash (SIGKILL);
only an OS crash can lose the last commits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

T = TypeVar("T")
log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """A state folder or file cannot be used at all (missing, read-only, not ours).

    Its message is one line naming the path and the reason; `gatewatch run` prints it and
    exits 2 instead of crash-looping with a traceback."""


@dataclass
class StoreHealth:
    """What /readyz and /metrics say about one SQLite file (see `health()`)."""

    path: str
    errors: int = 0  # failed statements (disk full, I/O error)
    recovered: int = 0  # corrupt files moved aside and recreated
    last_error: str = ""  # set while writes fail; cleared by the next statement that works


_health: dict[str, StoreHealth] = {}
_health_lock = threading.Lock()


def health() -> list[StoreHealth]:
    with _health_lock:
        return list(_health.values())


def _store_health(path: Path) -> StoreHealth:
    with _health_lock:
        return _health.setdefault(str(path), StoreHealth(str(path)))


def check_state_dir(path: str | os.PathLike[str]) -> None:
    """StorageError unless `path` is (or can be made) a folder we can write to."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".gatewatch-write-check-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise StorageError(f"state_dir {str(folder)!r}: cannot write there: {exc.strerror or exc}") from None


def _quarantine(path: Path, reason: str) -> Path:
    """Move a corrupt database (and its WAL) aside, kept for a look; a fresh one is made next."""
    kept = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            src.replace(Path(str(kept) + suffix))
    log.error("%s is corrupt (%s): moved to %s, starting a fresh one", path, reason, kept)
    return kept


class SqliteWorker:
    def __init__(self, path: str | Path, thread_name: str) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)

    def open(self, schema: str) -> sqlite3.Connection:
        """Open (creating the folder) with WAL; call on the worker thread.

        A file that is not a sound SQLite database is moved aside and replaced by a fresh
        one (logged, counted): every restart failing on it is worse than losing its rows.
        A folder or file we cannot use at all is a StorageError naming it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                return self._connect(schema)
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and not _is_corruption(exc):
                    raise
                _quarantine(self.path, str(exc))
                _store_health(self.path).recovered += 1
                return self._connect(schema)
        except (OSError, sqlite3.Error) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise StorageError(f"{self.path}: cannot open: {reason}") from None

    def _connect(self, schema: str) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check[0] if check else 'no answer'}")
            db.executescript(schema)
        except BaseException:
            db.close()
            raise
        return db

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        """Stop the worker thread once its queued statements ran (blocking: call it from the loop only
        after the last `run` returned)."""
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
        self.health = _store_health(self.path)

    def _open(self) -> None:
        db = self._worker.open(self.schema)
        self._db = db
        self._loaded(db)

    def _loaded(self, db: sqlite3.Connection) -> None:
        """Called on the worker thread right after the database is opened."""

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run on the worker thread; a failing statement (disk full, I/O error) is counted and
        marks the store unhealthy until one works again, then re-raised to the caller."""
        health = self.health
        try:
            result = await self._worker.run(fn, *args)
        except sqlite3.Error as exc:
            health.errors += 1
            if not health.last_error:
                log.error("%s: write failed: %s", self.path, exc)
            health.last_error = str(exc)
            raise
        if health.last_error:
            log.warning("%s: writes work again", self.path)
            health.last_error = ""
        return result

    async def start(self) -> None:
        if self._db is None:
            await self._run(self._open)

    async def stop(self, deadline: float) -> None:
        """Close the database; its statements are short, so the deadline is the app's guard's to keep."""
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._worker.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._db


def _is_corruption(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


class StorageCollector(Collector):
    """gatewatch_storage_errors_total{file} and gatewatch_storage_recovered_total{file}, read at
    scrape time from every SQLite store this process opened."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = str(Path(state_dir).resolve())

    def _mine(self) -> list[StoreHealth]:
        return [h for h in health() if str(Path(h.path).resolve()).startswith(self.state_dir)]

    def describe(self):
        return []

    def collect(self):
        errors = CounterMetricFamily("gatewatch_storage_errors", "Failed SQLite statements (disk full, I/O "
                                     "error) by file; the data stays in memory and is retried.", labels=["file"])
        recovered = CounterMetricFamily("gatewatch_storage_recovered", "Corrupt SQLite files moved aside "
                                        "(kept as <file>.corrupt-<time>) and created afresh.", labels=["file"])
        for item in self._mine():
            name = Path(item.path).name
            errors.add_metric([name], item.errors)
            recovered.add_metric([name], item.recovered)
        yield errors
        yield recovered

    def readiness(self) -> tuple[bool, str]:
        """For /readyz: degraded while a store's writes fail."""
        failing = [f"{Path(h.path).name}: {h.last_error}" for h in self._mine() if h.last_error]
        if failing:
            return False, "degraded: state writes failing (" + "; ".join(failing) + ")"
        return True, "ok"
