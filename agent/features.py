"""Optional features, installed into a GatewatchApp from its config.

Each feature lives in its own module and exposes `install(app)`; this file is the only
place that knows the list, so the core (app.py) never imports a feature directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.app import GatewatchApp


def install(app: GatewatchApp) -> None:
    """Install every feature; each one decides from `app.config` whether it is on."""
    for installer in _installers():
        installer(app)


def _installers() -> list:
    from agent.alerts import service as notify_service
    from agent.console import feature as console
    from agent.quotas import feature as quotas
    from agent.refresh import refresher as refresh
    from agent.rules import feature as rule_engine
    from agent.sinks import cloudwatch, otel
    from agent.sources import watch
    from agent.state import feature as shared_state

    return [
        refresh.install,
        cloudwatch.install,
        otel.install,
        notify_service.install,
        console.install,  # after notify (wraps its receiver), before rule_engine
        rule_engine.install,
        watch.install,
        shared_state.install,  # after rule_engine: hands it the shared windows
        quotas.install,
    ]
