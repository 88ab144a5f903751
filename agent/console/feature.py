"""Feature hook: the Alertmanager API v2 and the console, wired into a FeatureHost.

Installed after the notify feature (so it can wrap whichever alert receiver that left
in place) and before the rule engine (which looks the receiver up on every evaluation).
The API v2 is always on; the console page can be turned off with `console.enabled`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import yaml

from agent.alerts.alertstore import DEFAULT_RESOLVE_TIMEOUT, AlertStore
from agent.alerts.api_v2 import LOG_RECEIVER, AlertmanagerApi
from agent.alerts.silences import SilenceStore
from agent.console.deployments import DeploymentStats
from agent.console.security import ConsoleAuth

if TYPE_CHECKING:
    from agent.host import FeatureHost

log = logging.getLogger(__name__)


class SilenceLoader:
    """Without notify nobody owns a SilenceStore: this component loads one at start."""

    name = "silences"

    def __init__(self, silences: SilenceStore) -> None:
        self.silences = silences

    async def start(self) -> None:
        try:
            await self.silences.load()
        except Exception:
            log.exception("could not read silences from the state backend")

    async def stop(self, deadline: float) -> None:
        return None


def config_text(app: FeatureHost) -> str:
    """The routing part of the config as Alertmanager YAML, without any URL or secret."""
    notify = getattr(app.config, "notify", None)
    if notify is None or not notify.enabled:
        return yaml.safe_dump({"route": {"receiver": LOG_RECEIVER}, "receivers": [{"name": LOG_RECEIVER}]})

    def route(cfg: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"receiver": cfg.receiver} if cfg.receiver else {}
        if cfg.matchers:
            out["matchers"] = list(cfg.matchers)
        if cfg.group_by is not None:
            out["group_by"] = list(cfg.group_by)
        if cfg.continue_:
            out["continue"] = True
        if cfg.routes:
            out["routes"] = [route(c) for c in cfg.routes]
        return out

    doc = {"route": route(notify.route), "receivers": [{"name": r.name} for r in notify.receivers],
           "inhibit_rules": [{"source_matchers": list(r.source_matchers), "target_matchers": list(r.target_matchers),
                              "equal": list(r.equal)} for r in notify.inhibit_rules]}
    return yaml.safe_dump(doc, sort_keys=False)


def install(app: FeatureHost) -> None:
    service = app.notify

    def resolve_timeout() -> float:
        cfg = getattr(app.config, "notify", None)
        return float(cfg.resolve_timeout) if cfg is not None else DEFAULT_RESOLVE_TIMEOUT

    store = AlertStore(app.alert_receiver, resolve_timeout=resolve_timeout)
    app.alert_receiver = store
    if service is not None:
        silences = service.silences
    else:
        silences = SilenceStore(app.state)
        app.add_component(SilenceLoader(silences))

    def receivers() -> list[str]:
        cfg = getattr(app.config, "notify", None)
        if cfg is None or not cfg.enabled:
            return [LOG_RECEIVER]
        return [r.name for r in cfg.receivers]

    api = AlertmanagerApi(store, silences, router=lambda: service.router if service is not None else None,
                          receivers=receivers, config_text=lambda: config_text(app), started_at=app.started_at,
                          cluster_name=getattr(service, "task_id", "gatewatch"))
    app.route_setups.append(api.add_to)
    auth = ConsoleAuth(token=lambda: app.config.server.auth_token or None,
                       ttl=lambda: float(app.config.console.session_ttl),
                       allow_unauthenticated_writes=lambda: bool(app.config.server.allow_unauthenticated_writes))
    app.middlewares.append(auth.middleware)
    app.alert_store = store
    if not app.config.console.enabled:
        return
    from agent.console.routes import ConsoleRoutes

    stats = DeploymentStats(app.catalog)
    app.add_sink(stats)
    routes = ConsoleRoutes(api, stats, auth, engine=lambda: app.rule_engine,
                           notify=lambda: service, index_json=app.handle_index)
    app.route_setups.append(routes.add_to)
    app.root_handler = routes.index
