"""What a feature sees of the app: the slots it may fill and the methods it fills them with.

`GatewatchApp` (agent/app.py) is the one implementation; features type their `install`
argument with `FeatureHost`, so no feature imports the app, not even for the type checker,
and the app's public face is written down in one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from agent.alert import AlertReceiver
from agent.config import Config
from agent.selfmetrics import SelfMetrics
from agent.state.base import StateBackend

if TYPE_CHECKING:
    from agent.alerts.alertstore import AlertStore
    from agent.alerts.service import NotifyService
    from agent.enrich import Catalog, Enricher
    from agent.pipeline import Pipeline, Sink
    from agent.quotas.service import QuotaService
    from agent.rules.engine import RuleEngine
    from agent.sinks.cloudwatch import CloudWatchSink
    from agent.sources.health import HealthPoller
    from agent.sources.tail.source import TailSource


class Component(Protocol):
    """Anything with a lifecycle: sources, rule evaluator, notifier, exporters.

    `stop(deadline)`: `deadline` is a `time.monotonic()` value by which the component must be
    done (the app's share of SIGTERM's grace); what it can still hand on (a last batch, the
    outbox, a checkpoint) gets the time that is left, and nothing waits past it.
    """

    name: str

    async def start(self) -> None: ...

    async def stop(self, deadline: float) -> None: ...


class Flushable(Protocol):
    """A component that can hand on what it holds on demand (a test, an admin action, stop)."""

    async def flush(self, deadline: float) -> bool:
        """True when everything pending was handed on by `deadline` (time.monotonic())."""
        ...


ReloadHook = Callable[[Config], Awaitable[None]]
# one line group of `gatewatch check-config` output, from the feature that owns it
ConfigCheck = Callable[[], list[str]]


class FeatureHost(Protocol):
    # what every feature reads
    config: Config
    registry: CollectorRegistry
    metrics: SelfMetrics
    catalog: Catalog
    enricher: Enricher
    pipeline: Pipeline
    state: StateBackend
    started_at: float
    # what features extend
    alert_receiver: AlertReceiver  # the log receiver until notify (then the console) wraps it
    reload_hooks: list[ReloadHook]
    reload_handler: Callable[[], Awaitable[None]] | None  # the refresher's: config, rules and catalog at once
    readiness_checks: dict[str, Callable[[], tuple[bool, str]]]
    route_setups: list[Callable[[web.Application], None]]
    middlewares: list[Any]  # run before the bearer check (the console's session cookie, CSRF)
    root_handler: Callable[[web.Request], Awaitable[web.StreamResponse]] | None  # the console
    config_checks: list[ConfigCheck]
    # the slots a feature fills; None while that feature is off
    refresher: Component | None
    cloudwatch: CloudWatchSink | None
    notify: NotifyService | None
    alert_store: AlertStore | None
    rule_engine: RuleEngine | None
    log_tail: TailSource | None
    health_poller: HealthPoller | None
    quotas: QuotaService | None

    def add_sink(self, sink: Sink) -> None: ...

    def add_component(self, component: Component) -> None: ...

    def add_source(self, source: Component) -> None: ...

    def add_config_check(self, check: ConfigCheck) -> None: ...

    async def reload(self, new_config: Config) -> None: ...

    async def handle_index(self, request: web.Request) -> web.Response: ...
