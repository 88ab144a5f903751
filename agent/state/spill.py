"""Increments still unsent at shutdown (Redis down): kept in `state_dir/redis-pending.json` for the next start.

Batches keep their process id and sequence numbers, so a batch that did reach Redis before
the answer was lost is skipped when the next start sends it again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from agent.state.increments import IncrementBatch, KeyOps

log = logging.getLogger(__name__)


def write_spill(path: Path, batches: list[IncrementBatch]) -> None:
    """Write atomically (tmp + rename); raises OSError."""
    doc = {"batches": [{"instance": b.instance, "seq": b.seq,
                        "keys": {k: {"fields": ops.fields, "ttl": ops.ttl, "deadline": ops.deadline}
                                 for k, ops in b.keys.items()}} for b in batches]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def read_spill(path: Path) -> list[IncrementBatch]:
    """The batches of the last run, and the file removed; [] when absent or unreadable (logged)."""
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text())
        batches = []
        for item in doc.get("batches", []):
            keys = {}
            for key, ops in item["keys"].items():
                fields = {name: [op, tuple(value) if isinstance(value, list) else float(value)]
                          for name, (op, value) in ops["fields"].items()}
                keys[key] = KeyOps(fields, ops.get("ttl"), ops.get("deadline"))
            batches.append(IncrementBatch(str(item["instance"]), int(item["seq"]), keys))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("state: unreadable %s (%s); its increments are lost", path, exc)
        batches = []
    with contextlib.suppress(OSError):
        path.unlink()
    return batches
