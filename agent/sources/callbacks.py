"""HTTP ingest: LiteLLM's generic_api callback and its alerting webhooks.

LiteLLM never retries a failed callback POST, so these handlers answer fast and only
fail a request for what the sender can fix: a body that is not JSON at all (400), too
large (413), or a wrong token (401). A bad item inside a good batch is counted and skipped.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from agent.parse.litellm import BodyError, decode_body
from agent.parse.safejson import TOO_DEEP, NotJson, TooDeep, loads, split_array
from agent.parse.webhook import AlertBodyError, alert_to_event
from agent.pipeline import Pipeline
from agent.selfmetrics import SelfMetrics
from agent.sources.bodies import BodyReader

log = logging.getLogger(__name__)

EVENTS_ROUTE = "/v1/litellm/events"
ALERTS_ROUTE = "/v1/litellm/alerts"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer_auth_middleware(token: str | None, protected_prefixes: tuple[str, ...],
                           query_token_routes: tuple[str, ...] = (ALERTS_ROUTE,)) -> Callable:
    """401 unless `Authorization: Bearer <token>` on protected routes; constant-time compare.

    LiteLLM's alerting webhook (WEBHOOK_URL) cannot send headers, so on `query_token_routes`
    the token may instead come as `?token=...` in the URL.
    """
    expected = f"Bearer {token}".encode() if token else None
    expected_query = token.encode() if token else b""

    def authorized(request: web.Request) -> bool:
        given = request.headers.get("Authorization", "").encode()
        if hmac.compare_digest(given, expected or b""):
            return True
        if request.path in query_token_routes and "token" in request.query:
            return hmac.compare_digest(request.query["token"].encode(), expected_query)
        return False

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path.startswith(protected_prefixes):
            if not authorized(request):
                return web.json_response(
                    {"error": "unauthorized: missing or wrong bearer token"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="gatewatch"'},
                )
        return await handler(request)

    return middleware


class IngestRoutes:
    def __init__(self, pipeline: Pipeline, metrics: SelfMetrics, accepting: Callable[[], bool],
                 capture_content: Callable[[], bool] = lambda: False, bodies: BodyReader | None = None) -> None:
        self.pipeline = pipeline
        self.bodies = bodies or BodyReader(timeout=30.0, max_inflight=64)
        self.metrics = metrics
        self._accepting = accepting
        self._capture_content = capture_content
        self._received = metrics.events_received.labels("callback")
        self._received_alerts = metrics.events_received.labels("webhook")

    def add_to(self, app: web.Application) -> None:
        app.router.add_post(EVENTS_ROUTE, self.events)
        app.router.add_post(ALERTS_ROUTE, self.alerts)

    def _count(self, route: str, code: int) -> None:
        self.metrics.ingest_requests.labels(route, str(code)).inc()

    async def events(self, request: web.Request) -> web.Response:
        if not self._accepting():
            self._count(EVENTS_ROUTE, 503)
            return web.json_response({"error": "shutting down"}, status=503)
        body = await self._read(request, EVENTS_ROUTE, "callback")
        try:
            batch = decode_body(body, self._capture_content())
        except BodyError as exc:
            self.metrics.events_rejected.labels("callback", "invalid_body").inc()
            self._count(EVENTS_ROUTE, 400)
            return web.json_response({"error": str(exc)}, status=400)
        self.metrics.batch_size.observe(batch.items)
        for reason, count in batch.rejected.items():
            self.metrics.events_rejected.labels("callback", reason).inc(count)
            log.warning("rejected %d callback item(s): %s", count, reason)
        if batch.events:
            self.pipeline.publish(batch.events)
            self._received.inc(len(batch.events))
        self._count(EVENTS_ROUTE, 200)
        rejected = sum(batch.rejected.values())
        return web.json_response({"accepted": len(batch.events), "rejected": rejected,
                                  "rejected_reasons": batch.rejected})

    async def alerts(self, request: web.Request) -> web.Response:
        if not self._accepting():
            self._count(ALERTS_ROUTE, 503)
            return web.json_response({"error": "shutting down"}, status=503)
        raw = await self._read(request, ALERTS_ROUTE, "webhook")
        try:
            items = _alert_items(raw)
        except (NotJson, TooDeep) as exc:
            self.metrics.events_rejected.labels("webhook", "invalid_body").inc()
            self._count(ALERTS_ROUTE, 400)
            message = "body is not JSON: nested too deep" if isinstance(exc, TooDeep) else "body is not JSON"
            return web.json_response({"error": message}, status=400)
        events, rejected = [], 0
        for item in items:
            try:
                if isinstance(item, TooDeep):
                    raise AlertBodyError("nested too deep")
                events.append(alert_to_event(item))
            except AlertBodyError as exc:
                rejected += 1
                reason = TOO_DEEP if isinstance(item, TooDeep) else "unknown_alert"
                self.metrics.events_rejected.labels("webhook", reason).inc()
                log.warning("rejected alert body: %s", exc)
        if events:
            self.pipeline.publish(events)
            self._received_alerts.inc(len(events))
        self._count(ALERTS_ROUTE, 200)
        return web.json_response({"accepted": len(events), "rejected": rejected})

    async def _read(self, request: web.Request, route: str, source: str) -> bytes:
        try:
            return await self.bodies.read(request)
        except web.HTTPException as exc:
            self.metrics.events_rejected.labels(source, "unreadable_body").inc()
            self._count(route, exc.status)
            raise


def _alert_items(raw: bytes) -> list[object]:
    """The alert bodies of a POST: one object or an array; an item nested too deep becomes a
    TooDeep in its place, so the rest of the array still counts."""
    try:
        body = loads(raw)
    except TooDeep:
        if raw.lstrip()[:1] != b"[":
            raise
        items: list[object] = []
        for part in split_array(raw):
            try:
                items.append(loads(part))
            except TooDeep as exc:
                items.append(exc)
            except NotJson:
                items.append(None)  # rejected by alert_to_event as an unknown body
        return items
    return body if isinstance(body, list) else [body]
