"""`gatewatch run` as a real process, plus one extra sink that records what it was handed.

Usage: python -m tests.gatewatch_process RECORD.json run --config ... (any `gatewatch` argv).

The recording sink writes its file in `stop(deadline)`, so the file exists only if shutdown got as
far as flushing the sinks, and it holds every event the pipeline fanned out. Tests compare
it with what the ingest routes answered (200 + `accepted`), which is the contract with
LiteLLM: an accepted event is never lost by a graceful stop.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any


class RecordingSink:
    name = "recording"

    def __init__(self, path: str) -> None:
        self.path = path
        self.kinds: Counter[str] = Counter()
        self.sources: Counter[str] = Counter()  # non-outcome events by the source that published them
        self.call_ids: set[str] = set()

    def handle(self, events: Sequence[Any]) -> None:
        for event in events:
            self.kinds[event.kind] += 1
            if event.kind != "outcome":
                self.sources[event.source] += 1
            if event.call_id:
                self.call_ids.add(event.call_id)

    async def start(self) -> None:
        return None

    async def stop(self, deadline: float) -> None:
        await asyncio.to_thread(self._write)

    def _write(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"kinds": dict(self.kinds), "sources": dict(self.sources), "call_ids": len(self.call_ids),
                       "stopped_at": time.time()}, fh)
        os.replace(tmp, self.path)


def main(argv: list[str]) -> int:
    record, rest = argv[0], argv[1:]
    from agent import cli, features

    original = features._installers

    def installers() -> list:
        return [*original(), lambda app: app.add_sink(RecordingSink(record))]

    features._installers = installers  # type: ignore[assignment]
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
