"""HTTP API of the notify feature (under /api/, so behind the bearer token when one is set).

/api/v1/silences            GET (list; ?state=active|pending|expired), POST (create)
/api/v1/silences/{id}       GET, DELETE (expire)
/api/v1/alerts              POST Alertmanager-style alerts into the router (external sources, tests)
/api/v1/alerts/groups       GET the router's current groups
/api/v1/notifications/pending   GET waiting outbox rows
/api/v1/notifications/dead      GET dead letters
/api/v1/notifications/dead/{id} DELETE; POST .../retry puts it back in the outbox
/api/v1/receivers/{name}/test   POST: send a test message now

Targets are shown masked (`slack://***`); no answer ever contains a URL or token.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.alert import Alert
from agent.alerts.silences import SilenceError, parse_time, silence_from_request
from agent.alerts.templates import title
from agent.parse import safejson
from agent.state.base import StateUnavailable

if TYPE_CHECKING:
    from agent.alerts.service import NotifyService

log = logging.getLogger(__name__)
MAX_ALERTS_PER_POST = 10000


def add_routes(app: web.Application, service: NotifyService,
               receive: Callable[[Sequence[Alert]], None] | None = None) -> None:
    api = NotifyApi(service, receive)
    app.router.add_get("/api/v1/silences", api.list_silences)
    app.router.add_post("/api/v1/silences", api.create_silence)
    app.router.add_get("/api/v1/silences/{id}", api.get_silence)
    app.router.add_delete("/api/v1/silences/{id}", api.expire_silence)
    app.router.add_post("/api/v1/alerts", api.post_alerts)
    app.router.add_get("/api/v1/alerts/groups", api.groups)
    app.router.add_get("/api/v1/notifications/pending", api.pending)
    app.router.add_get("/api/v1/notifications/dead", api.dead)
    app.router.add_delete("/api/v1/notifications/dead/{id}", api.drop_dead)
    app.router.add_post("/api/v1/notifications/dead/{id}/retry", api.retry_dead)
    app.router.add_post("/api/v1/receivers/{name}/test", api.test_receiver)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json_body(request: web.Request) -> Any:
    try:
        return safejson.loads(await request.read())
    except safejson.TooDeep:
        raise web.HTTPBadRequest(text=json.dumps({"error": "body is not valid JSON: nested too deep"}),
                                 content_type="application/json") from None
    except (safejson.NotJson, UnicodeDecodeError):
        raise web.HTTPBadRequest(text=json.dumps({"error": "body is not valid JSON"}),
                                 content_type="application/json") from None


class NotifyApi:
    def __init__(self, service: NotifyService, receive: Callable[[Sequence[Alert]], None] | None = None) -> None:
        self.service = service
        # the app's alert receiver (the API v2's alert store in front of the router), so posted
        # alerts are listed by /api/v2/alerts too; the router itself when served alone
        self.receive = receive or service.receive

    # -- silences ---------------------------------------------------------------------
    async def list_silences(self, request: web.Request) -> web.Response:
        now = self.service.clock()
        wanted = request.query.get("state")
        items = [s.to_api(now) for s in self.service.silences.all()]
        if wanted:
            items = [s for s in items if s["status"]["state"] == wanted]
        return web.json_response(items)

    async def create_silence(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            silence = silence_from_request(body, self.service.clock())
        except SilenceError as exc:
            return _error(400, str(exc))
        try:
            await self.service.silences.add(silence)
        except (sqlite3.Error, OSError, StateUnavailable) as exc:  # disk full, state down: say so, do not 500
            log.error("silence not stored: %s", exc)
            return _error(503, f"the silence could not be stored (state backend: {exc}); retry later")
        log.info("silence %s created by %s: %s until %s", silence.id, silence.created_by,
                 ", ".join(str(m) for m in silence.matchers), silence.to_api(silence.starts_at)["endsAt"])
        return web.json_response({"silenceID": silence.id})

    async def get_silence(self, request: web.Request) -> web.Response:
        silence = self.service.silences.get(request.match_info["id"])
        if silence is None:
            return _error(404, "no such silence")
        return web.json_response(silence.to_api(self.service.clock()))

    async def expire_silence(self, request: web.Request) -> web.Response:
        silence = await self.service.silences.expire(request.match_info["id"])
        if silence is None:
            return _error(404, "no such silence")
        log.info("silence %s expired", silence.id)
        return web.json_response(silence.to_api(self.service.clock()))

    # -- alerts -----------------------------------------------------------------------
    async def post_alerts(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, list):
            return _error(400, "expected a JSON array of alerts")
        if len(body) > MAX_ALERTS_PER_POST:
            return _error(413, f"at most {MAX_ALERTS_PER_POST} alerts per request")
        now = self.service.clock()
        alerts: list[Alert] = []
        for i, item in enumerate(body):
            try:
                alerts.append(alert_from_api(item, now))
            except (SilenceError, ValueError, TypeError) as exc:
                return _error(400, f"alerts[{i}]: {exc}")
        self.receive(alerts)
        return web.json_response({"accepted": len(alerts)})

    async def groups(self, request: web.Request) -> web.Response:
        return web.json_response(self.service.router.snapshot(), dumps=safejson.dumps)

    # -- outbox -----------------------------------------------------------------------
    def _target(self, target_id: str) -> dict[str, str]:
        target = self.service.notifier.targets.get(target_id)
        if target is None:
            return {"target": "(no longer configured)", "kind": "unknown"}
        return {"target": target.masked, "kind": target.kind}

    async def pending(self, request: web.Request) -> web.Response:
        limit = _limit(request)
        rows = await self.service.outbox.pending(limit)
        return web.json_response({
            "depth": self.service.outbox.depth,
            "oldest_age_seconds": round(self.service.outbox.oldest_age(), 3),
            "items": [{"id": r.id, "receiver": r.receiver, **self._target(r.target), "title": _title(r.body),
                       "created": r.created, "next_attempt": r.next_at, "attempts": r.attempts,
                       "last_error": r.last_error, "last_status": r.last_status} for r in rows],
        })

    async def dead(self, request: web.Request) -> web.Response:
        rows = await self.service.outbox.dead_letters(_limit(request))
        return web.json_response({
            "count": self.service.outbox.dead_count,
            "items": [{"id": r.id, "receiver": r.receiver, **self._target(r.target), "title": _title(r.body),
                       "created": r.created, "died_at": r.died_at, "attempts": r.attempts, "reason": r.reason,
                       "last_status": r.last_status, "notification": r.body} for r in rows],
        }, dumps=safejson.dumps)

    async def drop_dead(self, request: web.Request) -> web.Response:
        removed = await self.service.outbox.drop_dead(request.match_info["id"])
        if not removed:
            return _error(404, "no such dead letter")
        return web.json_response({"removed": removed})

    async def retry_dead(self, request: web.Request) -> web.Response:
        requeued = await self.service.outbox.requeue_dead(request.match_info["id"])
        if not requeued:
            return _error(404, "no such dead letter")
        await self.service.delivery.sync_targets()
        self.service.delivery.kick()
        return web.json_response({"requeued": requeued})

    async def test_receiver(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            results = await self.service.send_test(name)
        except KeyError:
            return _error(404, "no such receiver")
        items = [{"target": masked, "ok": r.ok, "status": r.status, "error": r.error} for masked, r in results]
        return web.json_response({"receiver": name, "ok": all(r.ok for _, r in results), "results": items},
                                 status=200 if all(r.ok for _, r in results) else 502)


def _limit(request: web.Request) -> int:
    try:
        return max(1, min(1000, int(request.query.get("limit", "100"))))
    except ValueError:
        return 100


def _title(body: dict[str, Any]) -> str:
    from agent.alerts.notification import Notification

    try:
        return title(Notification.from_dict(body))
    except (TypeError, KeyError, ValueError):
        return ""


def alert_from_api(item: Any, now: float) -> Alert:
    """An Alertmanager API v2 postable alert: {labels, annotations, startsAt, endsAt, value?}."""
    if not isinstance(item, dict) or not isinstance(item.get("labels"), dict) or not item["labels"]:
        raise ValueError("expected an object with non-empty `labels`")
    labels = {str(k): str(v) for k, v in item["labels"].items()}
    if "alertname" not in labels:
        raise ValueError("labels.alertname is required")
    annotations = item.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise ValueError("annotations must be an object")
    starts = parse_time(item["startsAt"], "startsAt") if item.get("startsAt") else now
    ends = parse_time(item["endsAt"], "endsAt") if item.get("endsAt") else None
    value = item.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError("value must be a number")
    resolved = ends is not None and ends <= now
    return Alert(labels=labels, annotations={str(k): str(v) for k, v in annotations.items()},
                 state="resolved" if resolved else "firing", value=value, active_at=starts, fired_at=starts,
                 resolved_at=ends if resolved else None)
