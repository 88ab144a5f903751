"""Alertmanager API v2 (OpenAPI spec v0.25+), so amtool, Grafana and karma can talk to gatewatch.

GET  /api/v2/status                 cluster (disabled), version, config, uptime
GET  /api/v2/receivers              the configured receivers (`log` when notify is off)
GET  /api/v2/alerts                 ?filter=&active=&silenced=&inhibited=&unprocessed=&receiver=
POST /api/v2/alerts                 Prometheus / amtool alerts -> gatewatch's routing, silences, outbox
GET  /api/v2/alerts/groups          the same alerts grouped by the route tree's group_by
GET  /api/v2/silences               ?filter=
POST /api/v2/silences               create, or update when `id` names an existing silence
GET  /api/v2/silence/{id}, DELETE /api/v2/silence/{id}  read, expire

Everything reads the objects the rest of gatewatch already uses: the `AlertStore` in
front of the alert receiver, the `SilenceStore` and the notify `Router` (routes,
inhibition). Shapes follow the spec's definitions; tests validate them against it.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent import __version__
from agent.alert import Alert
from agent.alerts.alertstore import AlertStore, StoredAlert
from agent.alerts.silences import Silence, SilenceError, SilenceStore, iso, parse_time, silence_from_request
from agent.matchers import Matcher, MatcherError, matches_all, parse_matchers

if TYPE_CHECKING:
    from agent.alerts.router import Router

log = logging.getLogger(__name__)

PREFIX = "/api/v2"
MAX_ALERTS_PER_POST = 10000
LOG_RECEIVER = "log"  # the receiver name shown when notify is off (alerts go to the log)
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BadRequest(ValueError):
    """A request the client must fix; the message goes back as the 400 body."""


@dataclass
class AlertView:
    """One alert with what the API says about it (receivers, silences, inhibitions)."""

    stored: StoredAlert
    fingerprint: str
    receivers: list[str]
    silenced_by: list[str]
    inhibited_by: list[str]

    @property
    def alert(self) -> Alert:
        return self.stored.alert

    @property
    def state(self) -> str:
        return "suppressed" if self.silenced_by or self.inhibited_by else "active"

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "labels": dict(self.alert.labels),
            "annotations": dict(self.alert.annotations),
            "receivers": [{"name": r} for r in self.receivers],
            "fingerprint": self.fingerprint,
            "startsAt": iso(self.stored.starts_at),
            "updatedAt": iso(self.stored.updated_at),
            "endsAt": iso(self.stored.ends_at),
            "status": {"state": self.state, "silencedBy": self.silenced_by, "inhibitedBy": self.inhibited_by,
                       "mutedBy": []},
        }
        if self.alert.generator_url:
            out["generatorURL"] = self.alert.generator_url
        return out


class AlertmanagerApi:
    """The v2 routes over gatewatch's alert store, silences and router; `router` is None without notify."""

    def __init__(self, store: AlertStore, silences: SilenceStore, router: Callable[[], Router | None],
                 receivers: Callable[[], list[str]], config_text: Callable[[], str],
                 clock: Callable[[], float] = time.time, started_at: float | None = None,
                 cluster_name: str = "gatewatch") -> None:
        self.store = store
        self.silences = silences
        self.router = router
        self.receivers = receivers
        self.config_text = config_text
        self.clock = clock
        self.started_at = started_at if started_at is not None else clock()
        self.cluster_name = cluster_name

    def add_to(self, app: web.Application) -> None:
        app.router.add_get(f"{PREFIX}/status", self.get_status)
        app.router.add_get(f"{PREFIX}/receivers", self.get_receivers)
        app.router.add_get(f"{PREFIX}/alerts", self.get_alerts)
        app.router.add_post(f"{PREFIX}/alerts", self.post_alerts)
        app.router.add_get(f"{PREFIX}/alerts/groups", self.get_groups)
        app.router.add_get(f"{PREFIX}/silences", self.get_silences)
        app.router.add_post(f"{PREFIX}/silences", self.post_silences)
        app.router.add_get(f"{PREFIX}/silence/{{id}}", self.get_silence)
        app.router.add_delete(f"{PREFIX}/silence/{{id}}", self.delete_silence)

    # -- views (also used by the console) -------------------------------------------------
    def views(self, now: float | None = None) -> list[AlertView]:
        """Every alert that has not ended, with its receivers, silences and inhibitions."""
        now = self.clock() if now is None else now
        router = self.router()
        out = []
        for stored in self.store.alerts():
            if stored.resolved(now):
                continue
            labels = stored.alert.labels
            fp = stored.alert.fingerprint
            if router is not None:
                receivers = router.receivers_for(labels)
                inhibited = router.inhibited_by(labels, fp)
            else:
                receivers, inhibited = [LOG_RECEIVER], []
            silenced = sorted(self.silences.silenced_by(labels, now))
            out.append(AlertView(stored, fp, receivers, silenced, inhibited))
        out.sort(key=lambda v: (v.stored.starts_at, v.fingerprint))
        return out

    def filtered(self, query: Mapping[str, Any]) -> list[AlertView]:
        matchers = _filters(query)
        active = _bool(query, "active")
        silenced = _bool(query, "silenced")
        inhibited = _bool(query, "inhibited")
        receiver = _receiver_regex(query)
        out = []
        for view in self.views():
            if not active and view.state == "active":
                continue
            if not silenced and view.silenced_by:
                continue
            if not inhibited and view.inhibited_by:
                continue
            if receiver is not None and not any(receiver.fullmatch(r) for r in view.receivers):
                continue
            if not matches_all(matchers, view.alert.labels):
                continue
            out.append(view)
        return out

    def groups(self, views: list[AlertView]) -> list[dict[str, Any]]:
        """Group alerts as the route tree does (group_by per route), one group per receiver."""
        router = self.router()
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for view in views:
            labels = view.alert.labels
            if router is not None:
                routes = [(r.receiver, r.id, r.group_labels(labels)) for r in router.root.match(labels)
                          if r.receiver in router.receivers]
            else:
                routes = [(LOG_RECEIVER, "root", {})]
            for receiver, route_id, glabels in routes:
                key = (route_id, json.dumps(glabels, sort_keys=True))
                group = groups.setdefault(key, {"labels": glabels, "routeLabels": {},
                                                "receiver": {"name": receiver}, "alerts": []})
                group["alerts"].append(view.to_api())
        return sorted(groups.values(), key=lambda g: (g["receiver"]["name"], json.dumps(g["labels"], sort_keys=True)))

    # -- general --------------------------------------------------------------------------
    async def get_status(self, request: web.Request) -> web.Response:
        return web.json_response({
            "cluster": {"name": self.cluster_name, "status": "disabled", "peers": []},
            "versionInfo": {"version": __version__, "revision": "", "branch": "", "buildUser": "gatewatch",
                            "buildDate": "", "goVersion": f"python{platform.python_version()}"},
            "config": {"original": self.config_text()},
            "uptime": iso(self.started_at),
        })

    async def get_receivers(self, request: web.Request) -> web.Response:
        return web.json_response([{"name": name} for name in self.receivers()])

    # -- alerts ---------------------------------------------------------------------------
    async def get_alerts(self, request: web.Request) -> web.Response:
        try:
            views = self.filtered(request.query)
        except BadRequest as exc:
            return _bad(str(exc))
        return web.json_response([v.to_api() for v in views])

    async def get_groups(self, request: web.Request) -> web.Response:
        try:
            views = self.filtered(request.query)
        except BadRequest as exc:
            return _bad(str(exc))
        return web.json_response(self.groups(views))

    async def post_alerts(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _bad("body is not valid JSON")
        if not isinstance(body, list):
            return _bad("expected a JSON array of postable alerts")
        if len(body) > MAX_ALERTS_PER_POST:
            return web.json_response(f"at most {MAX_ALERTS_PER_POST} alerts per request", status=413)
        now = self.clock()
        alerts: list[Alert] = []
        ends: list[float | None] = []
        for i, item in enumerate(body):
            try:
                alert, end = postable_alert(item, now)
            except (BadRequest, SilenceError) as exc:
                return _bad(f"alerts[{i}]: {exc}")
            alerts.append(alert)
            ends.append(end)
        self.store.receive(alerts, ends)
        return web.json_response(None)

    # -- silences -------------------------------------------------------------------------
    async def get_silences(self, request: web.Request) -> web.Response:
        try:
            matchers = _filters(request.query)
        except BadRequest as exc:
            return _bad(str(exc))
        now = self.clock()
        items = [s for s in self.silences.all() if silence_matches_filter(s, matchers)]
        return web.json_response([gettable_silence(s, now) for s in sort_silences(items, now)])

    async def post_silences(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _bad("body is not valid JSON")
        now = self.clock()
        if isinstance(body, dict) and body.get("id"):
            existing = self.silences.get(str(body["id"]))
            if existing is None:
                return web.json_response("silence not found", status=404)
        try:
            silence = silence_from_request(body, now)
        except SilenceError as exc:
            return _bad(str(exc))
        await self.silences.add(silence)
        log.info("silence %s saved by %s: %s until %s", silence.id, silence.created_by,
                 ", ".join(str(m) for m in silence.matchers), iso(silence.ends_at))
        return web.json_response({"silenceID": silence.id})

    async def get_silence(self, request: web.Request) -> web.Response:
        silence = self.silences.get(request.match_info["id"])
        if silence is None:
            return web.json_response("silence not found", status=404)
        return web.json_response(gettable_silence(silence, self.clock()))

    async def delete_silence(self, request: web.Request) -> web.Response:
        silence = await self.silences.expire(request.match_info["id"])
        if silence is None:
            return web.json_response("silence not found", status=404)
        log.info("silence %s expired", silence.id)
        return web.json_response(None)


def _bad(message: str) -> web.Response:
    return web.json_response(message, status=400)  # the spec's BadRequest is a JSON string


def _bool(query: Mapping[str, Any], name: str, default: bool = True) -> bool:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    lowered = str(raw).strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise BadRequest(f"{name}: expected true or false, got {raw!r}")


def _filters(query: Any) -> list[Matcher]:
    values = query.getall("filter", []) if hasattr(query, "getall") else list(query.get("filter") or [])
    out: list[Matcher] = []
    for value in values:
        try:
            out.extend(parse_matchers(value))
        except MatcherError as exc:
            raise BadRequest(f"bad filter {value!r}: {exc}") from None
    return out


def _receiver_regex(query: Mapping[str, Any]) -> re.Pattern[str] | None:
    raw = query.get("receiver")
    if not raw:
        return None
    try:
        return re.compile(raw)
    except re.error as exc:
        raise BadRequest(f"receiver: bad regular expression: {exc}") from None


def postable_alert(item: Any, now: float) -> tuple[Alert, float | None]:
    """A postableAlert -> (Alert, explicit endsAt). Alertmanager's rules: labels required and valid."""
    if not isinstance(item, dict):
        raise BadRequest("expected an object")
    labels = item.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise BadRequest("labels: expected a non-empty object")
    for name, value in labels.items():
        if not isinstance(name, str) or not _LABEL_NAME.match(name):
            raise BadRequest(f"labels: invalid label name {name!r}")
        if not isinstance(value, str):
            raise BadRequest(f"labels.{name}: expected a string")
    annotations = item.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        raise BadRequest("annotations: expected an object of strings")
    generator = item.get("generatorURL") or ""
    if not isinstance(generator, str):
        raise BadRequest("generatorURL: expected a string")
    starts = _time(item, "startsAt") or now
    ends = _time(item, "endsAt")
    if ends is not None and ends < starts:
        raise BadRequest("endsAt is before startsAt")
    resolved = ends is not None and ends <= now
    alert = Alert(labels={k: v for k, v in labels.items() if v != ""}, annotations=dict(annotations),
                  state="resolved" if resolved else "firing", active_at=starts, fired_at=starts,
                  resolved_at=ends if resolved else None, generator_url=generator)
    return alert, ends


def _time(item: dict[str, Any], key: str) -> float | None:
    """A time field; Go clients (amtool) send the zero time 0001-01-01T00:00:00Z for "unset"."""
    if not item.get(key):
        return None
    value = parse_time(item[key], key)
    return value if value > 0 else None


def gettable_silence(silence: Silence, now: float) -> dict[str, Any]:
    out = silence.to_api(now)
    out["annotations"] = {}
    return out


def sort_silences(items: list[Silence], now: float) -> list[Silence]:
    """Alertmanager's order: active (soonest end first), pending (soonest start), expired (latest end)."""
    order = {"active": 0, "pending": 1, "expired": 2}

    def key(s: Silence) -> tuple[int, float]:
        state = s.state(now)
        if state == "active":
            return order[state], s.ends_at
        if state == "pending":
            return order[state], s.starts_at
        return order[state], -s.ends_at

    return sorted(items, key=key)


def silence_matches_filter(silence: Silence, matchers: list[Matcher]) -> bool:
    """As Alertmanager: the filter matches the label set made of the silence's equality matchers."""
    if not matchers:
        return True
    labels = {m.name: m.value for m in silence.matchers if not m.is_regex and m.is_equal}
    return matches_all(matchers, labels)
