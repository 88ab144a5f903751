"""Feature hook: the rule engine wired into the app (agent/features.py calls `install`).

The engine and its HTTP API know nothing of the app; this module is where they meet: it
fills the app's slots (sink, component, reload hook, readiness, routes, config check) and
gives the API the app's reload, so `POST /-/reload` reloads what SIGHUP reloads.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from agent.config import load_config
from agent.configtypes import ConfigError
from agent.rules.api import add_routes
from agent.rules.config import RuleEngineConfig
from agent.rules.engine import RuleEngine
from agent.rules.model import RuleSetError

if TYPE_CHECKING:
    from agent.host import FeatureHost


def install(app: FeatureHost) -> None:
    """Feature hook (agent/features.py): wire the engine into the app when enabled."""
    settings: RuleEngineConfig = getattr(app.config, "rule_engine", None) or RuleEngineConfig()
    if not settings.enabled:
        return
    engine = RuleEngine(settings, app.config.rules, app.state, app.catalog, app.registry,
                        receiver=lambda: app.alert_receiver)
    app.add_sink(engine.sink)
    app.add_component(engine)
    app.reload_hooks.append(engine.reload_config)
    app.readiness_checks["rules"] = engine.ready
    app.route_setups.append(lambda web_app: add_routes(web_app, engine, lambda: reload_all(app)))
    app.add_config_check(lambda: _check_lines(engine))
    app.rule_engine = engine



def _check_lines(engine: RuleEngine) -> list[str]:
    try:
        rule_set = engine.load()
    except RuleSetError as exc:
        raise ConfigError("rules", f"invalid rule files:\n{exc}") from None
    lines = [f"rules: {len(rule_set)} rules in {len(rule_set.groups)} groups from {len(rule_set.files)} files"]
    lines.extend(f"  {f}" for f in rule_set.files)
    return lines


async def reload_all(app: FeatureHost) -> str | None:
    """What `POST /-/reload` does with an app: refuse a broken config file first (returns
    why), then reload config, rule files and catalog like SIGHUP."""
    config = app.config
    if config.source_file:  # refuse a broken config here, with the reason, before anything changes
        loop = asyncio.get_running_loop()
        try:
            config = await loop.run_in_executor(None, load_config, config.source_file)
        except ConfigError as exc:
            return str(exc)
    if app.reload_handler is not None:
        await app.reload_handler()  # the refresher: config, rule files and LiteLLM catalog, like SIGHUP
    else:
        await app.reload(config)
    return None
