"""Feature hook: with the Redis backend, global rule windows and budgets go through it.

Installed after the rule engine (agent/features.py). It hands the engine the shared
window factory for `scope: global` rules, and registers a flush-tick source that moves
budget deltas into the backend's queue every `state.flush_interval`, so the other
sidecars see this one's spend within a second instead of at its next budget evaluation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.rules.budget import KEEP_PERIODS, BudgetRule, period_of
from agent.state.redis import RedisState
from agent.state.shared_window import shared_window_factory

if TYPE_CHECKING:
    from agent.host import FeatureHost


def drain_budgets(engine: Any, state: RedisState, now: float) -> None:
    """Budget deltas (BudgetRule.pending) -> the state's increment queue (no I/O)."""
    for runtime in list(engine.rules.values()):
        if not isinstance(runtime, BudgetRule) or not runtime.pending:
            continue
        pending, runtime.pending = runtime.pending, {}
        ttl = period_of(now, runtime.spec.period, runtime.tz).length + KEEP_PERIODS
        for period_id, amounts in pending.items():
            if amounts:
                state.enqueue(runtime.state_key(period_id), amounts, ttl)


def install(app: FeatureHost) -> None:
    state = app.state
    if not isinstance(state, RedisState):
        return
    cluster = {True: "cluster", False: "single node", "auto": "cluster: auto"}[state.config.cluster]
    auth = f", IAM auth as {state.config.iam_auth.user}" if state.config.iam_auth else ""
    app.add_config_check(lambda: [f"state: redis {state.display} ({cluster}{auth}), key prefix {state.prefix!r}, flush "
                           f"every {state.config.flush_interval:g}s, claim lease {state.config.claim_ttl:g}s"])
    engine = app.rule_engine
    if engine is None:
        return
    engine.shared_windows = shared_window_factory(state)
    state.sources.append(lambda now: drain_budgets(engine, state, now))
