"""The small interface behind which shared state lives: local (memory + SQLite) or Redis.

Only what must survive a restart or be shared between sidecars goes through here:
budget accumulators, global rule-window counts, silences, alert state and the
notification de-dup claims. Everything else stays in process memory.
"""

from __future__ import annotations

from typing import Any, Protocol


class StateUnavailable(RuntimeError):
    """A shared backend cannot be reached now: callers fall back (local view, send anyway) and go on."""


class StateBackend(Protocol):
    name: str  # "local" | "redis"

    async def start(self) -> None: ...

    async def stop(self, deadline: float) -> None:
        """Hand on what is still queued until `deadline` (time.monotonic()), keep the rest, close."""
        ...

    # JSON documents (silences, alert state, checkpoints of rule state)
    async def get_json(self, key: str) -> Any | None: ...

    async def put_json(self, key: str, value: Any, ttl: float | None = None) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def list_json(self, prefix: str) -> dict[str, Any]: ...

    # additive counters in a hash (budget accumulators: key = period, field = label set)
    async def incr_many(self, key: str, amounts: dict[str, float], ttl: float | None = None) -> None: ...

    async def get_counters(self, key: str) -> dict[str, float]: ...

    # exactly-one-sender claims (notification de-dup across tasks)
    async def claim(self, key: str, owner: str, ttl: float) -> bool:
        """True if `owner` holds `key` now (newly taken, or already its own); expires after ttl."""
        ...

    async def release(self, key: str, owner: str) -> None: ...

    def healthy(self) -> tuple[bool, str]:
        """For /readyz: (ok, detail)."""
        ...
