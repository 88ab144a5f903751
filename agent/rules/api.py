"""HTTP: `GET /api/v1/rules`, `GET /api/v1/alerts` (Prometheus-like JSON) and `POST /-/reload`.

All three sit under the bearer-protected prefixes (`/api/`, `/-/`). `POST /-/reload`
re-reads the config file the sidecar was started with (if any) and then the rule files,
exactly as SIGHUP does; the answer says what was kept/changed, or why nothing was.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.alert import fingerprint
from agent.parse import safejson
from agent.rules.budget import BudgetRule
from agent.rules.state import ActiveAlert

if TYPE_CHECKING:
    from agent.rules.engine import RuleEngine, Runtime

RULES_ROUTE = "/api/v1/rules"
ALERTS_ROUTE = "/api/v1/alerts"
RELOAD_ROUTE = "/-/reload"


# reloads everything the app reloads; returns why a broken config was refused, or None
ReloadAll = Callable[[], Awaitable[str | None]]


def add_routes(app: web.Application, engine: RuleEngine, reload_all: ReloadAll | None = None) -> None:
    api = RulesApi(engine, reload_all)
    app.router.add_get(RULES_ROUTE, api.rules)
    app.router.add_get(ALERTS_ROUTE, api.alerts)
    app.router.add_post(RELOAD_ROUTE, api.reload)


def iso(t: float | None) -> str | None:
    if t is None or not math.isfinite(t):
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _num(value: float | None) -> float | str | None:
    if value is None:
        return None
    if math.isnan(value) or math.isinf(value):
        return str(value)  # JSON has no NaN/Inf
    return value


def alert_json(runtime: Runtime, alert: ActiveAlert) -> dict[str, Any]:
    return {
        "labels": alert.labels,
        "annotations": alert.annotations,
        "state": alert.state,
        "activeAt": iso(alert.active_at),
        "firedAt": iso(alert.fired_at),
        "value": _num(alert.value),
        "fingerprint": fingerprint(alert.labels),
        "group": runtime.rule.group,
        "rule": runtime.rule.id,
        "scope": runtime.rule.scope,
    }


def rule_json(runtime: Runtime) -> dict[str, Any]:
    rule = runtime.rule
    states = [a.state for a in runtime.states.active.values()]
    state = "firing" if "firing" in states else "pending" if states else "inactive"
    out: dict[str, Any] = {
        "name": rule.alert,
        "id": rule.id,
        "type": "alerting",
        "state": state,
        "health": runtime.health,
        "lastError": runtime.last_error,
        "lastEvaluation": iso(runtime.last_evaluation),
        "evaluationTime": runtime.evaluation_seconds,
        "file": rule.file,
        "line": rule.line,
        "scope": rule.scope,
        "for": rule.for_,
        "keepFiringFor": rule.keep_firing_for,
        "labels": rule.labels,
        "annotations": {k: t.source for k, t in rule.annotations.items()},
        "series": runtime.series(),
        "alerts": [alert_json(runtime, a) for a in runtime.states.active.values()],
    }
    if isinstance(runtime, BudgetRule):
        b = runtime.spec
        out["budget"] = {"signal": b.signal, "by": list(b.by), "where": [m.describe() for m in b.where],
                         "period": b.period, "timezone": b.timezone, "limit": b.limit, "limits": b.limits,
                         "thresholds": list(b.thresholds), "forecast": b.forecast, "currentPeriod": runtime.period.id}
    else:
        out.update(signal=rule.signal, aggregate=rule.aggregate, over=rule.over, by=list(rule.by),
                   where=[m.describe() for m in rule.where], minEvents=rule.min_events, above=rule.above,
                   below=rule.below, overrides=len(rule.overrides))
    return out


class RulesApi:
    def __init__(self, engine: RuleEngine, reload_all: ReloadAll | None = None) -> None:
        self.engine = engine
        self.reload_all = reload_all

    async def rules(self, request: web.Request) -> web.Response:
        groups = []
        for group in self.engine.groups:
            groups.append({
                "name": group.group.name,
                "file": group.group.file,
                "interval": group.group.interval,
                "lastEvaluation": iso(group.last_evaluation),
                "evaluationTime": group.evaluation_seconds,
                "rules": [rule_json(r) for r in group.rules],
            })
        return web.json_response({"status": "success",
                                  "data": {"groups": groups, "reload": self.engine.last_reload.to_json()}},
                                 dumps=safejson.dumps)

    async def alerts(self, request: web.Request) -> web.Response:
        wanted = request.query.get("state")
        name = request.query.get("alertname")
        alerts = [alert_json(r, a) for r, a in self.engine.active_alerts()
                  if (not wanted or a.state == wanted) and (not name or r.rule.alert == name)]
        alerts.sort(key=lambda a: (a["activeAt"] or "", a["labels"].get("alertname", "")))
        return web.json_response({"status": "success", "data": {"alerts": alerts}}, dumps=safejson.dumps)

    async def reload(self, request: web.Request) -> web.Response:
        if self.reload_all is None:  # engine served without an app (tests): rules only
            status = await self.engine.reload(self.engine.locations)
        else:
            refused = await self.reload_all()
            if refused is not None:
                return web.json_response({"status": "error", "error": f"config not reloaded: {refused}"}, status=400)
            status = self.engine.last_reload
        body = {"status": "success" if status.ok else "error", "data": status.to_json()}
        if not status.ok:
            body["error"] = f"rules not reloaded, the previous rules keep running: {status.error}"
        return web.json_response(body, status=200 if status.ok else 400)
