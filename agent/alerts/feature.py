"""Feature hook: the notify service (routing, outbox, delivery) wired into the app when
`notify.receivers` is configured (agent/features.py calls `install`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.alerts.api import add_routes
from agent.alerts.config import NotifyConfig
from agent.alerts.service import DEFAULT_LEASE, NotifyService

if TYPE_CHECKING:
    from agent.host import FeatureHost


def install(app: FeatureHost) -> None:
    """Replace the log receiver with the notify router when `notify.receivers` is configured."""
    cfg: NotifyConfig | None = getattr(app.config, "notify", None)
    if cfg is None or not cfg.enabled:
        return
    lease = getattr(getattr(app.config, "state", None), "claim_ttl", None) or DEFAULT_LEASE
    service = NotifyService(cfg, app.state, app.registry, app.config.state_dir, claim_lease=float(lease))
    app.alert_receiver = service
    app.add_component(service)
    app.route_setups.append(lambda web_app: add_routes(web_app, service,
                                                       receive=lambda alerts: app.alert_receiver.receive(alerts)))
    app.reload_hooks.append(service.reload)
    app.readiness_checks["notify"] = service.readiness
    app.notify = service
    app.add_config_check(lambda: describe_receivers(service))



def describe_receivers(service: NotifyService) -> list[str]:
    lines = [f"notify: {len(service.config.receivers)} receiver(s)"]
    for name, targets in service.notifier.by_receiver.items():
        lines.append(f"  {name}: " + ", ".join(f"{t.kind} {t.masked}" for t in targets))
    return lines
