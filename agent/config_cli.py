"""Load the config, then build and run part of the app from it, for a command-line verb.

`check-config` (the catalog, rules and receivers) and `quotas show` (the quota service) use
it: a rule file or a receiver can still prove bad while that part builds, and both cases are
told the same way, as `error: file: key.path: reason` on stderr; each verb picks its own exit
code. `replay` loads the config itself, because it checks its input files in between.
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
