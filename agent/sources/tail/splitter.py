"""Bytes -> complete lines, with a bounded partial line and cut-off very long lines.

Keeps the bytes after the last newline for the next read (a line being written is never
handed out half). A line longer than `max_line` is cut: its first `max_line` bytes are
kept and handed out once its newline arrives, the rest is skipped; memory stays bounded
whatever the writer does. `carry` is how many bytes since the last complete line are
held or skipped, so the reader knows the offset of the last complete line (checkpoint).
"""

from __future__ import annotations


class LineSplitter:
    __slots__ = ("carry", "discarding", "head", "max_line", "partial", "skip_first")

    def __init__(self, max_line: int, skip_first: bool = False) -> None:
        self.max_line = max_line
        self.partial = b""
        self.head = b""  # first max_line bytes of the over-long line being skipped
        self.discarding = False
        self.carry = 0
        self.skip_first = skip_first  # started mid-line (read_from: end): drop up to the first newline

    def reset(self) -> None:
        self.partial = b""
        self.head = b""
        self.discarding = False
        self.carry = 0
        self.skip_first = False

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Complete lines in `data` (without newlines) and how many of them were cut."""
        cut = 0
        lines: list[bytes] = []
        if self.skip_first or self.discarding:
            newline = data.find(b"\n")
            if newline < 0:
                self.carry += len(data)
                return lines, 0
            if self.discarding:
                lines.append(self.head)
                cut = 1
            self.head = b""
            self.discarding = self.skip_first = False
            data = data[newline + 1:]
            self.carry = 0
        if self.partial:
            data = self.partial + data
        parts = data.split(b"\n")
        last = parts.pop()
        if parts:
            if max(map(len, parts)) > self.max_line:
                for i, part in enumerate(parts):
                    if len(part) > self.max_line:
                        parts[i] = part[: self.max_line]
                        cut += 1
            if lines:
                lines.extend(parts)
            else:
                lines = parts
        if len(last) > self.max_line:
            self.head = last[: self.max_line]
            self.discarding = True
            self.partial = b""
        else:
            self.partial = last
        self.carry = len(last)
        return lines, cut

    def flush(self) -> tuple[list[bytes], int]:
        """The last unterminated line of a file that will not grow any more."""
        if self.discarding:
            line, cut = [self.head], 1
        elif self.partial and not self.skip_first:
            line, cut = [self.partial], 0
        else:
            line, cut = [], 0
        self.reset()
        return line, cut
