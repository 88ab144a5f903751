"""Find the log files, follow them through rotation, read new lines, parse them into batches.

Runs in one thread (`Tailer.run`). Files are tracked by identity (device, inode, hash of
the first line), never by path, so a renamed file keeps its read position and a new file
at the old path is read from its start. What it handles, and how:

- rename rotation (`app.log` -> `app.log.1`, new `app.log`): the old file stays open and
  is drained until it has been idle for `rotate_wait`; if the glob also matches the
  rotated name, the file is recognised by its identity and never read twice.
- copytruncate (copy to `app.log.1`, truncate `app.log`): a size below the read position
  or a new first line means the file was truncated: it is read again from 0. A copy whose
  first line is the first line of a file we were reading is the continuation of that
  content: it is not read while the original is live, and once the original is truncated
  it is read from where the original stopped, so lines written between our last read and
  the truncation are not lost (when the copy matches the glob).
- a file that appears later: read from its start.
- partial last lines wait for their newline; very long lines are cut and counted.
- restart: offsets come from the checkpoint (exact identity, else the same first line
  whose original inode now holds other content: the copy of a file truncated meanwhile).

Each batch carries the events parsed from its lines and, per file, the offset after its
last complete line; the source commits those offsets once the pipeline took the events.
"""

from __future__ import annotations

import glob
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.events import Event
from agent.parse.logs import LogParser
from agent.sources.tail.config import TailConfig
from agent.sources.tail.fingerprint import file_key, first_line_hash, parse_key
from agent.sources.tail.splitter import LineSplitter

log = logging.getLogger(__name__)

ORPHAN_TTL = 60.0  # how long a copy of truncated content may take to show up
SKIP_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip", ".tmp", ".swp")


@dataclass(slots=True)
class TailBatch:
    events: list[Event] = field(default_factory=list)
    lines: int = 0
    nbytes: int = 0
    offsets: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (path, committed offset)
    forget: list[str] = field(default_factory=list)  # keys of files no longer tracked


class TailStats:
    """Counters the tailer keeps; the source mirrors them into Prometheus metrics."""

    def __init__(self) -> None:
        self.lines = 0
        self.truncated_lines = 0
        self.rotations: dict[str, int] = {"rename": 0, "truncate": 0, "copytruncate": 0}
        self.files = 0


class TrackedFile:
    __slots__ = ("dev", "fd", "fingerprint", "gone_since", "idle_since", "ino", "line_start", "path", "pos",
                 "rotated", "shadow_of", "shadow_since", "size", "splitter")

    def __init__(self, path: str, dev: int, ino: int, max_line: int) -> None:
        self.path = path
        self.dev = dev
        self.ino = ino
        self.fd: int | None = None
        self.fingerprint: str | None = None
        self.pos = 0  # next byte to read
        self.line_start = 0  # offset after the last complete line handed out (checkpoint)
        self.size = 0
        self.splitter = LineSplitter(max_line)
        self.rotated = False  # no longer at the path it was found at
        self.gone_since: float | None = None  # not matched by any pattern since
        self.idle_since: float | None = None
        self.shadow_of: tuple[int, int] | None = None  # a copy of this live file: wait
        self.shadow_since = 0.0

    @property
    def ident(self) -> tuple[int, int]:
        return self.dev, self.ino

    @property
    def key(self) -> str | None:
        return file_key(self.dev, self.ino, self.fingerprint) if self.fingerprint else None

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


class Tailer:
    """Follows the files matching `patterns`; hands parsed batches to `emit` (which may block)."""

    def __init__(self, patterns: list[str], settings: TailConfig, checkpoint: dict[str, dict[str, Any]] | None,
                 emit: Callable[[TailBatch], None], parser: LogParser | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.patterns = list(patterns)
        self.settings = settings
        self.emit = emit
        self.parser = parser or LogParser()
        self.clock = clock
        self.stats = TailStats()
        self.first_start = checkpoint is None
        self._checkpoint = dict(checkpoint or {})
        self.files: dict[tuple[int, int], TrackedFile] = {}
        self._at_path: dict[str, tuple[int, int]] = {}
        # content whose file was truncated under us: fingerprint -> (read offset, when, its checkpoint key).
        # The key stays in the checkpoint until a copy takes over, so a restart can resume the copy too.
        self._orphans: dict[str, tuple[int, float, str | None]] = {}
        self._batch = TailBatch()
        self._initial = True
        self._unreadable: set[str] = set()
        self.stop_event = threading.Event()

    # -- main loop ---------------------------------------------------------------------
    def run(self) -> None:
        next_discovery = 0.0
        try:
            while not self.stop_event.is_set():
                now = self.clock()
                if now >= next_discovery:
                    self.discover()
                    next_discovery = now + self.settings.glob_interval
                progressed = self.poll(until=now + self.settings.glob_interval)
                self.flush_batch()
                if not progressed:
                    self.stop_event.wait(self.settings.poll_interval)
            self.flush_batch()
        finally:
            for tracked in self.files.values():
                tracked.close()

    def stop(self) -> None:
        self.stop_event.set()

    def lag_bytes(self) -> int:
        """Bytes written to tracked files and not yet handed out as lines."""
        total = 0
        for tracked in list(self.files.values()):
            if tracked.shadow_of is None:
                total += max(0, tracked.size - tracked.line_start)
        return total

    # -- discovery ---------------------------------------------------------------------
    def discover(self) -> None:
        now = self.clock()
        found: dict[str, os.stat_result] = {}
        for pattern in self.patterns:
            paths = glob.glob(pattern) if glob.has_magic(pattern) else [pattern]
            for path in paths:
                if path.endswith(SKIP_SUFFIXES) or path in found:
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    found[path] = st
        seen: set[tuple[int, int]] = set()
        fresh: list[tuple[str, os.stat_result]] = []
        for path, st in found.items():
            ident = (st.st_dev, st.st_ino)
            seen.add(ident)
            previous = self._at_path.get(path)
            if previous is not None and previous != ident:
                old = self.files.get(previous)
                if old is not None:
                    self._mark_rotated(old)  # the path now holds another file
            self._at_path[path] = ident
            tracked = self.files.get(ident)
            if tracked is None:
                fresh.append((path, st))
            else:
                tracked.gone_since = None
                current = found.get(tracked.path)
                if current is None or (current.st_dev, current.st_ino) != ident:
                    self._mark_rotated(tracked)  # renamed (to a name the patterns also match)
                    tracked.path = path
                tracked.size = st.st_size
        for path in [p for p in self._at_path if p not in found]:
            del self._at_path[path]
        # files seen for the first time: exact checkpoint matches before copies of truncated content
        fresh.sort(key=lambda item: self._checkpoint_offset(item[1]) is None)
        for path, st in fresh:
            self._track(path, st, now)
        for ident, tracked in list(self.files.items()):
            if ident not in seen:
                if tracked.gone_since is None:
                    tracked.gone_since = now
                    self._mark_rotated(tracked)  # renamed out of the patterns, or deleted
                self._maybe_forget(tracked, now)
            elif tracked.shadow_of is not None:
                self._check_shadow(tracked, now)
            elif tracked.fd is None and tracked.size > tracked.pos:
                self._reopen(tracked)
            elif tracked.fd is not None and tracked.rotated and tracked.pos >= tracked.size \
                    and self._idle_for(tracked, now) > self.settings.rotate_wait:
                tracked.close()  # fully read rotated file: keep its position, free the descriptor
        self._initial = False
        self._expire(now)
        self.stats.files = len(self.files)

    def _mark_rotated(self, tracked: TrackedFile) -> None:
        if not tracked.rotated:
            tracked.rotated = True
            self.stats.rotations["rename"] += 1

    def _checkpoint_offset(self, st: os.stat_result) -> int | None:
        for key, entry in self._checkpoint.items():
            parsed = parse_key(key)
            if parsed and parsed[0] == st.st_dev and parsed[1] == st.st_ino:
                return int(entry["offset"])
        return None

    def _expire(self, now: float) -> None:
        if not self._initial:
            self._checkpoint.clear()  # only a restart looks at saved offsets
        for fingerprint, (_, when, key) in list(self._orphans.items()):
            if now - when > ORPHAN_TTL:
                del self._orphans[fingerprint]
                if key:
                    self._batch.forget.append(key)

    def _track(self, path: str, st: os.stat_result, now: float) -> None:
        tracked = TrackedFile(path, st.st_dev, st.st_ino, self.settings.max_line_bytes)
        try:
            tracked.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            if path not in self._unreadable:  # once, not at every discovery round
                self._unreadable.add(path)
                log.warning("cannot open %s: %s", path, exc.strerror)
            return
        self._unreadable.discard(path)
        tracked.size = os.fstat(tracked.fd).st_size
        tracked.fingerprint = first_line_hash(tracked.fd)
        start = self._start_offset(tracked, now)
        self.files[tracked.ident] = tracked
        if start is None:  # a copy of a file we are reading: wait for the original's truncation
            return
        self._seek(tracked, start)

    def _seek(self, tracked: TrackedFile, start: int) -> None:
        tracked.pos = tracked.line_start = start
        tracked.splitter.reset()
        if tracked.key is not None:
            self._batch.offsets[tracked.key] = (tracked.path, start)
        if start > 0:
            try:
                tracked.splitter.skip_first = os.pread(tracked.fd, 1, start - 1) != b"\n"  # type: ignore[arg-type]
            except OSError:
                tracked.splitter.skip_first = False

    def _start_offset(self, tracked: TrackedFile, now: float) -> int | None:
        fingerprint = tracked.fingerprint
        if fingerprint is not None:
            entry = self._checkpoint.pop(file_key(tracked.dev, tracked.ino, fingerprint), None)
            if entry is not None:
                offset = int(entry["offset"])
                if offset <= tracked.size:
                    return offset
                self.stats.rotations["truncate"] += 1
                return 0
            orphan = self._orphan_offset(fingerprint, tracked)
            if orphan is not None:
                self.stats.rotations["copytruncate"] += 1
                return orphan
            live = self._live_with(fingerprint, tracked)
            if live is not None:
                tracked.shadow_of = live.ident
                tracked.shadow_since = now
                return None
        if self._initial and self.first_start and self.settings.read_from == "end":
            return tracked.size
        return 0

    def _orphan_offset(self, fingerprint: str, tracked: TrackedFile) -> int | None:
        """Where reading stopped in content `fingerprint` whose original file was truncated."""
        orphan = self._take_orphan(fingerprint)
        if orphan is not None:
            return min(orphan, tracked.size)  # a copy is a prefix of what we read
        if self._initial:  # restart: a saved entry whose inode no longer holds this content
            for key, entry in list(self._checkpoint.items()):
                parsed = parse_key(key)
                if parsed is None or parsed[2] != fingerprint:
                    continue
                holder = self.files.get((parsed[0], parsed[1]))
                if holder is not None and holder.fingerprint == fingerprint:
                    continue
                del self._checkpoint[key]
                offset = int(entry["offset"])
                return offset if offset <= tracked.size else 0
        return None

    def _take_orphan(self, fingerprint: str) -> int | None:
        orphan = self._orphans.pop(fingerprint, None)
        if orphan is None:
            return None
        offset, _, key = orphan
        if key:
            self._batch.forget.append(key)
        return offset

    def _live_with(self, fingerprint: str, tracked: TrackedFile) -> TrackedFile | None:
        for other in self.files.values():
            if other is not tracked and other.fingerprint == fingerprint and other.shadow_of is None:
                return other
        return None

    def _check_shadow(self, tracked: TrackedFile, now: float) -> None:
        """Decide what a file with the same first line as the file we read (its twin) is.

        A copy is a prefix of its original, so: if the twin got truncated, the shadow is
        the copy and continues where the twin stopped; if the shadow's own content changed,
        it is the original, truncated under us, and its new content is read from 0; if the
        shadow is larger, it is the original (we were reading a copy) and takes over from
        where we are; a shadow that stays a prefix is a plain copy we already read.
        """
        twin = self.files.get(tracked.shadow_of) if tracked.shadow_of else None
        try:
            size = os.fstat(tracked.fd).st_size if tracked.fd is not None else 0
        except OSError:
            size = 0
        if tracked.fingerprint is not None and tracked.fingerprint in self._orphans:
            # a copy is a prefix of what we read: past its end there is nothing left for us in it
            self._unshadow(tracked, min(self._take_orphan(tracked.fingerprint) or 0, size))
            self.stats.rotations["copytruncate"] += 1
            return
        if twin is not None and twin.fd is not None and twin.shadow_of is None:
            try:
                twin_size = os.fstat(twin.fd).st_size
            except OSError:
                twin_size = twin.size
            if twin_size < twin.pos or first_line_hash(twin.fd) != twin.fingerprint:
                self._truncated(twin)  # records where we stopped; this copy takes over in there
                return
        fingerprint = first_line_hash(tracked.fd) if tracked.fd is not None else None
        if fingerprint != tracked.fingerprint or size < tracked.size:
            tracked.fingerprint = fingerprint
            tracked.size = size
            self._unshadow(tracked, 0)
            self.stats.rotations["truncate"] += 1
            return
        tracked.size = size
        if twin is None or twin.fingerprint != tracked.fingerprint:
            # the twin is gone or holds other content now, without a truncation we saw:
            # it was drained (see _maybe_forget), so this is a copy we already read
            self._unshadow(tracked, tracked.size)
        elif size > twin.size:
            start = twin.line_start
            twin.shadow_of, twin.shadow_since = tracked.ident, now
            twin.splitter.reset()
            self._unshadow(tracked, start)
        elif now - tracked.shadow_since > max(self.settings.rotate_wait, 5.0):
            self._unshadow(tracked, tracked.size)

    def _unshadow(self, tracked: TrackedFile, start: int) -> None:
        tracked.shadow_of = None
        self._seek(tracked, start)

    def _reopen(self, tracked: TrackedFile) -> None:
        try:
            fd = os.open(tracked.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != tracked.ident:
            os.close(fd)
            return
        tracked.fd = fd

    def _idle_for(self, tracked: TrackedFile, now: float) -> float:
        return 0.0 if tracked.idle_since is None else now - tracked.idle_since

    def _maybe_forget(self, tracked: TrackedFile, now: float) -> None:
        """Drop a file that left the patterns once it is drained and idle (deleted or moved away)."""
        if tracked.fd is not None and tracked.shadow_of is None:
            if tracked.pos < tracked.size or self._idle_for(tracked, now) <= self.settings.rotate_wait:
                return
            lines, cut = tracked.splitter.flush()
            if lines:
                tracked.line_start = tracked.pos
                self._add_lines(tracked, lines, cut, 0)
        for other in list(self.files.values()):  # copies of it continue after what we read here
            if other.shadow_of == tracked.ident and other.fingerprint == tracked.fingerprint:
                self._unshadow(other, min(tracked.line_start, other.size))
        tracked.close()
        del self.files[tracked.ident]
        if tracked.key:
            self._batch.forget.append(tracked.key)

    # -- reading -----------------------------------------------------------------------------
    def poll(self, until: float | None = None) -> bool:
        """Read what is new in every open file (a chunk each per round, for fairness).

        Keeps going while there is data, but returns by `until` so discovery still runs
        under a writer that never pauses.
        """
        progressed_any = False
        while True:
            progressed = False
            for tracked in list(self.files.values()):
                if tracked.fd is not None and tracked.shadow_of is None and self._read(tracked):
                    progressed = True
                if self._batch.lines >= self.settings.batch_lines:
                    self.flush_batch()
            progressed_any = progressed_any or progressed
            if not progressed or self.stop_event.is_set() or (until is not None and self.clock() >= until):
                return progressed_any

    def _read(self, tracked: TrackedFile) -> bool:
        fd = tracked.fd
        assert fd is not None
        now = self.clock()
        try:
            size = os.fstat(fd).st_size
        except OSError:
            tracked.close()
            return False
        tracked.size = size
        if size < tracked.pos:
            self._truncated(tracked)
        if size <= tracked.pos:
            if tracked.idle_since is None:
                tracked.idle_since = now
            return False
        tracked.idle_since = None
        want = min(size - tracked.pos, self.settings.read_chunk_bytes)
        try:
            data = os.pread(fd, want, tracked.pos)
        except OSError as exc:
            log.warning("read failed on %s: %s", tracked.path, exc.strerror)
            return False
        if not data:
            return False
        # Checked after the read: if the content was replaced before or while we read, the
        # bytes are not the continuation of what we read so far.
        if tracked.fingerprint is not None and first_line_hash(fd) != tracked.fingerprint:
            self._truncated(tracked)
            return True
        tracked.pos += len(data)
        lines, cut = tracked.splitter.feed(data)
        tracked.line_start = tracked.pos - tracked.splitter.carry
        if tracked.fingerprint is None and lines:
            tracked.fingerprint = first_line_hash(fd)
        self._add_lines(tracked, lines, cut, len(data))
        return True

    def _truncated(self, tracked: TrackedFile) -> None:
        """The file's content was replaced under the same inode (copytruncate or `: > file`)."""
        if tracked.fingerprint is not None:
            self._orphans[tracked.fingerprint] = (tracked.line_start, self.clock(), tracked.key)
        self.stats.rotations["truncate"] += 1
        tracked.pos = tracked.line_start = 0
        tracked.splitter.reset()
        tracked.fingerprint = first_line_hash(tracked.fd) if tracked.fd is not None else None
        for other in self.files.values():  # a copy waiting for this truncation takes over now
            if other.shadow_of == tracked.ident:
                self._check_shadow(other, self.clock())

    def _add_lines(self, tracked: TrackedFile, lines: list[bytes], cut: int, nbytes: int) -> None:
        batch = self._batch
        if lines:
            events = self.parser.parse_many(lines)
            if events:
                batch.events.extend(events)
            batch.lines += len(lines)
            self.stats.lines += len(lines)
        if cut:
            self.stats.truncated_lines += cut
        batch.nbytes += nbytes
        key = tracked.key
        if key is not None:
            batch.offsets[key] = (tracked.path, tracked.line_start)

    def flush_batch(self) -> None:
        batch = self._batch
        if not (batch.lines or batch.offsets or batch.forget):
            return
        self._batch = TailBatch()
        self.emit(batch)
