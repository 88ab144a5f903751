"""The `litellm.tail` config section: how the log tail reads files.

Kept free of other gatewatch imports because `agent.config` imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent.configtypes import ByteSize, ConfigError, Duration


@dataclass
class TailConfig:
    # Where to start a file when gatewatch has never run here (no checkpoint file yet).
    # "end" keeps a fresh sidecar from replaying yesterday's cooldowns as new alerts; files
    # that appear later (rotation, restart of the proxy) are always read from the start.
    read_from: Literal["beginning", "end"] = "end"
    poll_interval: Duration = Duration(0.25)  # check open files for new data when idle
    glob_interval: Duration = Duration(1.0)  # re-expand globs: new files, renames, deletions
    rotate_wait: Duration = Duration(5.0)  # keep draining a rotated-away file until idle this long
    max_line_bytes: ByteSize = ByteSize(256 * 1024)  # longer lines are cut (and counted)
    read_chunk_bytes: ByteSize = ByteSize(1024 * 1024)
    batch_lines: int = 4096  # lines per batch handed to the pipeline
    queue_batches: int = 32  # parsed batches waiting for the pipeline; reading pauses when full
    checkpoint_interval: Duration = Duration(1.0)

    def validate(self, path: str) -> None:
        for name in ("poll_interval", "glob_interval", "checkpoint_interval"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{path}.{name}", "expected a positive duration")
        if self.max_line_bytes < 1024:
            raise ConfigError(f"{path}.max_line_bytes", "expected at least 1KB")
        if self.read_chunk_bytes < 4096:
            raise ConfigError(f"{path}.read_chunk_bytes", "expected at least 4KB")
        for name in ("batch_lines", "queue_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{path}.{name}", "expected a positive integer")
