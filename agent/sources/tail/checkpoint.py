"""Read offsets on disk, written atomically, so a restart resumes where it stopped.

One small JSON document in the state directory: file key (device:inode:first-line hash)
-> path and the offset of the end of the last line the pipeline has taken. Written to a
temporary file, fsynced and renamed over the old one, so a crash leaves either the old or
the new checkpoint, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

VERSION = 1


class Checkpoints:
    def __init__(self, directory: str | os.PathLike[str], name: str = "tail-checkpoints.json") -> None:
        self.path = Path(directory) / name
        self.written_at: float | None = None

    def load(self) -> dict[str, dict[str, Any]] | None:
        """Entries by file key; None when no checkpoint was ever written (a first start)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read tail checkpoint %s: %s; starting without it", self.path, exc.strerror)
            return None
        try:
            doc = json.loads(raw)
            files = doc["files"] if isinstance(doc, dict) and doc.get("version") == VERSION else None
        except (ValueError, KeyError):
            files = None
        if not isinstance(files, dict):
            log.warning("tail checkpoint %s is not readable; starting without it", self.path)
            return {}
        entries: dict[str, dict[str, Any]] = {}
        for key, entry in files.items():
            if isinstance(entry, dict) and isinstance(entry.get("offset"), int) and entry["offset"] >= 0:
                entries[str(key)] = {"path": str(entry.get("path") or ""), "offset": entry["offset"]}
        return entries

    def save(self, entries: dict[str, dict[str, Any]]) -> None:
        """Replace the checkpoint atomically (blocking: run it in an executor)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        body = json.dumps({"version": VERSION, "written_at": time.time(), "files": entries},
                          separators=(",", ":")).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        try:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            dir_fd = None
        if dir_fd is not None:
            try:
                os.fsync(dir_fd)
            except OSError:
                pass
            finally:
                os.close(dir_fd)
        self.written_at = time.time()
