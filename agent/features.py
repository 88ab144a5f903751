"""Optional features, installed into a FeatureHost from its config.

Each feature lives in its own module and exposes `install(app)`; this file is the only
place that knows the list, so the core (app.py) never imports a feature directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.host import FeatureHost


def install(app: FeatureHost) -> None:
    """Install every feature; each one decides from `app.config` whether it is on."""
    for installer in _installers():
        installer(app)


def _installers() -> list:
    from agent.alerts import feature as alerts
    from agent.console import feature as console
    from agent.quotas import feature as quotas
    from agent.refresh import refresher
    from agent.rules import feature as rules
    from agent.sinks import feature as sinks
    from agent.sources import feature as sources
    from agent.state import feature as state

    return [
        refresher.install,
        sinks.install_cloudwatch,
        sinks.install_otel,
        alerts.install,
        console.install,  # after notify (wraps its receiver), before the rule engine
        rules.install,
        sources.install,
        state.install,  # after the rule engine: hands it the shared windows
        quotas.install,
    ]
