"""The console's HTTP side: the page, its assets, login, and the JSON views it reads.

`/` answers the console page to browsers and the route list (as before) to clients that
ask for JSON; `/api` always gives the route list. Assets are package data served from
memory with a strict Content-Security-Policy (`'self'` only), so the page cannot load
anything from another host even if a template went wrong. The console's own views live
under `/api/v1/console/` so the bearer check (or the session) covers them like any API.
"""

from __future__ import annotations

import asyncio
import math
import mimetypes
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.alert import fingerprint
from agent.alerts.api_v2 import AlertmanagerApi
from agent.alerts.silences import iso
from agent.console.deployments import DeploymentStats
from agent.console.security import LOGIN, LOGOUT, ConsoleAuth

if TYPE_CHECKING:
    from agent.alerts.service import NotifyService
    from agent.rules.engine import RuleEngine

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
ASSETS = ("index.html", "app.js", "app.css", "favicon.svg")


def load_assets() -> dict[str, tuple[bytes, str]]:
    base = resources.files("agent.console") / "static"
    out = {}
    for name in ASSETS:
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        out[name] = ((base / name).read_bytes(), ctype)
    return out


def value_unit(signal: str, aggregate: str) -> str:
    """The unit of a rule's value, from its signal and aggregate (for the Alerts page)."""
    if aggregate == "ratio" or signal.endswith("_ratio") or signal == "quota_utilization":
        return "ratio"
    if aggregate in ("count", "consecutive", "absent"):
        return "events"
    base = ("s" if signal.endswith("_seconds") else "USD" if "cost" in signal or "spend" in signal
            else "tokens" if signal.startswith("tokens") else "")
    if aggregate == "rate":
        return f"{base}/s" if base else "/s"
    return base


def _num(value: float | None) -> float | str | None:
    if value is None:
        return None
    return value if math.isfinite(value) else str(value)


class ConsoleRoutes:
    """Serves the console; reads the same objects as the APIs (never a second copy of state)."""

    def __init__(self, api: AlertmanagerApi, stats: DeploymentStats, auth: ConsoleAuth,
                 engine: Callable[[], RuleEngine | None], notify: Callable[[], NotifyService | None],
                 index_json: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        self.api = api
        self.stats = stats
        self.auth = auth
        self.engine = engine
        self.notify = notify
        self.index_json = index_json
        self.assets = load_assets()

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/console/static/{name}", self.asset)
        app.router.add_get("/console/session", self.auth.session)
        app.router.add_post(LOGIN, self.auth.login)
        app.router.add_post(LOGOUT, self.auth.logout)
        app.router.add_get("/api/v1/console/alerts", self.alerts)
        app.router.add_get("/api/v1/console/deployments", self.deployments)
        app.router.add_get("/api/v1/console/notifications", self.notifications)

    async def index(self, request: web.Request) -> web.StreamResponse:
        accept = request.headers.get("Accept", "")
        if "application/json" in accept and "text/html" not in accept:
            return await self.index_json(request)
        body, ctype = self.assets["index.html"]
        return web.Response(body=body, headers={"Content-Type": ctype, "Cache-Control": "no-cache",
                                                **SECURITY_HEADERS})

    async def asset(self, request: web.Request) -> web.Response:
        found = self.assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, ctype = found
        return web.Response(body=body, headers={"Content-Type": ctype, "Cache-Control": "no-cache",
                                                **SECURITY_HEADERS})

    # -- JSON views -----------------------------------------------------------------------
    async def alerts(self, request: web.Request) -> web.Response:
        """Pending and firing rule alerts plus alerts posted from outside, with their mute state."""
        views = {v.fingerprint: v for v in self.api.views()}
        items: list[dict[str, Any]] = []
        engine = self.engine()
        seen: set[str] = set()
        for runtime, active in (engine.active_alerts() if engine is not None else []):
            fp = fingerprint(active.labels)
            seen.add(fp)
            view = views.get(fp)
            now = self.api.clock()
            silenced = view.silenced_by if view else sorted(self.api.silences.silenced_by(active.labels, now))
            rule = runtime.rule
            items.append(self._item(fp, active.labels, active.annotations, active.state, _num(active.value),
                                    value_unit(getattr(rule, "signal", "") or "", getattr(rule, "aggregate", "")
                                               or ""),
                                    iso(active.fired_at or active.active_at), silenced,
                                    view.inhibited_by if view else [], view.receivers if view else [],
                                    "", f"rule {rule.id}"))
        for fp, view in views.items():
            if fp in seen:
                continue
            alert = view.alert
            items.append(self._item(fp, alert.labels, alert.annotations, "firing", _num(alert.value), "",
                                    iso(view.stored.starts_at), view.silenced_by, view.inhibited_by, view.receivers,
                                    alert.generator_url, "posted"))
        items.sort(key=lambda a: ({"firing": 0, "pending": 1}.get(a["state"], 2), a["labels"].get("alertname", ""),
                                  a["activeSince"] or ""))
        return web.json_response({"alerts": items})

    @staticmethod
    def _item(fp: str, labels: dict[str, str], annotations: dict[str, str], state: str, value: Any, unit: str,
              since: str | None, silenced: list[str], inhibited: list[str], receivers: list[str],
              generator_url: str, source: str) -> dict[str, Any]:
        return {"fingerprint": fp, "labels": labels, "annotations": annotations, "state": state,
                "muted": bool(silenced or inhibited), "value": value, "unit": unit, "activeSince": since,
                "silencedBy": silenced, "inhibitedBy": inhibited, "receivers": receivers,
                "runbookURL": annotations.get("runbook_url") or annotations.get("runbook") or "",
                "generatorURL": generator_url, "source": source}

    async def deployments(self, request: web.Request) -> web.Response:
        # off the event loop: at thousands of deployments the snapshot takes tens of ms (bench/console_bench.py);
        # it only reads (a copy of the deployment list, lists replaced whole), so a concurrent handle() is safe
        loop = asyncio.get_running_loop()
        groups = await loop.run_in_executor(None, self.stats.snapshot)
        return web.json_response({"groups": groups, "dropped": self.stats.dropped})

    async def notifications(self, request: web.Request) -> web.Response:
        service = self.notify()
        if service is None:
            return web.json_response({"enabled": False, "pending": [], "sent": [], "dead": []})
        targets = service.notifier.targets

        def target(target_id: str) -> dict[str, str]:
            found = targets.get(target_id)
            return {"target": found.masked if found else "(no longer configured)",
                    "receiver": found.receiver if found else "", "kind": found.kind if found else "unknown"}

        pending = await service.outbox.pending(100)
        sent = await service.outbox.sent_recently(50)
        dead = await service.outbox.dead_letters(100)
        return web.json_response({
            "enabled": True,
            "depth": service.outbox.depth,
            "dead_count": service.outbox.dead_count,
            "pending": [{"id": r.id, **target(r.target), "title": _title(r.body), "created": iso(r.created),
                         "next_attempt": iso(r.next_at), "attempts": r.attempts, "last_error": r.last_error,
                         "last_status": r.last_status} for r in pending],
            "sent": [{"id": note_id, **target(tid), "sent_at": iso(at)} for note_id, tid, at in sent],
            "dead": [{"id": r.id, **target(r.target), "title": _title(r.body), "died_at": iso(r.died_at),
                      "attempts": r.attempts, "reason": r.reason, "last_status": r.last_status} for r in dead],
        })


def _title(body: dict[str, Any]) -> str:
    from agent.alerts.api import _title as title

    return title(body)
