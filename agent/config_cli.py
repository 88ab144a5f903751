"""The config-loading step every command-line verb that needs the whole config shares.

A verb loads the config and then builds part of the app from it (`check-config` the
catalog, rules and receivers; `quotas show` the quota service), and a rule file or a
receiver can still prove bad while it builds: both are told the same way, as
`error: file: key.path: reason` on stderr, and each verb picks its own exit code.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from agent.config import Config, load_config
from agent.configtypes import ConfigError

T = TypeVar("T")


def load_and_run(path: str | None, work: Callable[[Config], Coroutine[Any, Any, T]]) -> T | None:
    """Load the config at `path` (None: GATEWATCH_CONFIG, else the embedded defaults) and run
    `work(config)` in a new event loop; None (after printing why) when the config is bad."""
    try:
        return asyncio.run(work(load_config(path)))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
