"""File identity: device + inode + a hash of the first line.

The inode alone is not enough: a deleted file's inode is reused by the next new file,
and copytruncate keeps the inode while replacing the content. The first line (it carries a
timestamp in every LiteLLM log) tells those apart, and lets a copy made by copytruncate be
recognised as the continuation of content already half read.
"""

from __future__ import annotations

import hashlib
import os

FINGERPRINT_BYTES = 4096


def first_line_hash(fd: int) -> str | None:
    """Hash of the first line (at most FINGERPRINT_BYTES), or None while it is incomplete."""
    try:
        head = os.pread(fd, FINGERPRINT_BYTES, 0)
    except OSError:
        return None
    newline = head.find(b"\n")
    if newline >= 0:
        head = head[:newline]
    elif len(head) < FINGERPRINT_BYTES:
        return None
    return hashlib.blake2b(head, digest_size=8).hexdigest()


def file_key(dev: int, ino: int, fingerprint: str) -> str:
    """The checkpoint key of one file's content."""
    return f"{dev}:{ino}:{fingerprint}"


def parse_key(key: str) -> tuple[int, int, str] | None:
    parts = key.split(":")
    if len(parts) != 3:
        return None
    try:
        return int(parts[0]), int(parts[1]), parts[2]
    except ValueError:
        return None
