"""Picks the state backend from config: Redis when `state.url` is set, else local SQLite."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from agent.state.base import StateBackend
from agent.state.local import LocalState

if TYPE_CHECKING:
    from agent.config import Config


def create_state(config: Config, registry: CollectorRegistry | None = None) -> StateBackend:
    settings = getattr(config, "state", None)
    if settings is None or not settings.enabled:
        return LocalState(config.state_dir)
    from agent.state.redis import RedisState

    return RedisState(settings, registry, config.state_dir)
