"""Poll the proxy's health and model endpoints: proxy up/down, deployment health, catalog.

- `/health/readiness` and `/health/liveliness` every `litellm.health_interval`: one
  PROXY_STATE event each (value 1 up, 0 down) with `attrs["endpoint"]`.
- `/health` (it calls every deployment, so it is slow and costs tokens: off unless
  `litellm.deployment_health_interval` is set): DEPLOYMENT_STATE per deployment, value 0
  healthy / 2 unhealthy (LiteLLM's meaning of `litellm_deployment_state`).
- `/model/info` every `litellm.model_info_interval`: merged into the deployment catalog,
  so account/region/limits of a deployment added to the proxy show up without a restart.

The proxy being slow, down, unauthorised or answering garbage is a state to report
(`gatewatch_health_poll_total{endpoint,outcome}` and the events above), never a crash. The
API key is sent as a bearer token and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from agent.enrich import Catalog, Enricher, catalog_from_model_info, task_identity
from agent.events import Event, Kind
from agent.parse.logs import error_class_of, split_provider

log = logging.getLogger(__name__)

OUTCOMES = ("ok", "unauthorized", "http_error", "timeout", "connection_error", "bad_body")
READY_STATUSES = ("healthy", "connected")


def _health_body(body: Any) -> bool:
    return isinstance(body, dict) and all(isinstance(body.get(k, []), list)
                                          for k in ("healthy_endpoints", "unhealthy_endpoints"))


@dataclass
class PollSettings:
    base_url: str
    api_key: str | None = None
    health_interval: float = 15.0
    deployment_health_interval: float | None = None
    model_info_interval: float | None = 300.0
    request_timeout: float = 10.0
    deployment_health_timeout: float = 120.0
    # a proxy not seen up yet is starting, not down, for this long after the poller starts
    # (LiteLLM with a database can take minutes): its down polls carry `starting: true`
    start_grace: float = 300.0


@dataclass
class Answer:
    outcome: str
    status: int | None = None
    body: Any = None
    elapsed: float = 0.0


class HealthPoller:
    name = "health-poller"

    def __init__(self, settings: PollSettings, publish: Callable[[list[Event]], None], registry: CollectorRegistry,
                 catalog: Catalog | None = None, enricher: Enricher | None = None,
                 on_catalog: Callable[[str], None] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.publish = publish
        self.catalog = catalog
        self.enricher = enricher
        self.on_catalog = on_catalog  # called with "ok"/"error" after a /model/info refresh
        self.clock = clock
        self.polls = Counter("gatewatch_health_poll", "Polls of the proxy's health and model endpoints.",
                             ["endpoint", "outcome"], registry=registry)
        for endpoint in ("readiness", "liveliness", "health", "model_info"):
            for outcome in OUTCOMES:
                self.polls.labels(endpoint, outcome)
        self.up: dict[str, bool | None] = {"readiness": None, "liveliness": None}
        self.last: dict[str, Answer] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._warned: set[tuple[str, str]] = set()
        self._catalog_tried = asyncio.Event()
        self.task = ""  # the ECS task ARN, else the host: which task's proxy a page is about
        self.started_at: float | None = None
        self.last_up: dict[str, float] = {}  # endpoint -> when it last answered OK

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        """The HTTP session only (polls can then be called directly, as tests and one-shot checks do)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "gatewatch"})

    async def start(self) -> None:
        await self.open()
        if not self.task:
            self.task = await task_identity()
        if self.started_at is None:
            self.started_at = self.clock()
        s = self.settings
        self._catalog_tried = asyncio.Event()
        self._every("readiness", s.health_interval, self.poll_proxy)
        if s.model_info_interval and self.catalog is not None:
            self._every("model_info", s.model_info_interval, self._refresh_catalog)
        else:
            self._catalog_tried.set()
        if s.deployment_health_interval:
            self._every("health", s.deployment_health_interval, self.poll_deployments, after=self._catalog_tried)
        log.info("polling %s every %.0fs (deployment health %s, model info %s)", s.base_url, s.health_interval,
                 f"every {s.deployment_health_interval:.0f}s" if s.deployment_health_interval else "off",
                 f"every {s.model_info_interval:.0f}s" if s.model_info_interval and self.catalog else "off")

    async def stop(self, deadline: float) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def reconfigure(self, settings: PollSettings) -> None:
        if settings == self.settings:
            return
        await self.stop(time.monotonic() + float(self.settings.request_timeout))
        self.settings = settings
        await self.start()

    async def _refresh_catalog(self) -> None:
        try:
            await self.poll_model_info()
        finally:
            self._catalog_tried.set()

    def _every(self, name: str, interval: float, poll: Callable[[], Any], after: asyncio.Event | None = None) -> None:
        async def loop() -> None:
            if after is not None:  # deployment states are labelled from the catalog: refresh it first
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(after.wait(), timeout=self.settings.request_timeout + 1)
            while True:
                try:
                    await poll()
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug in one poll must not end the loop
                    log.exception("health poll %s failed", name)
                await asyncio.sleep(interval)

        self._tasks.append(asyncio.create_task(loop(), name=f"gatewatch-poll-{name}"))

    # -- HTTP --------------------------------------------------------------------------
    async def _get(self, endpoint: str, path: str, limit: float,
                   valid: Callable[[Any], bool] | None = None) -> Answer:
        """GET with the bearer key; the outcome is counted and returned, never raised."""
        assert self._session is not None
        url = self.settings.base_url.rstrip("/") + path
        headers = {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}
        started = time.monotonic()
        try:
            async with self._session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=limit)) as resp:
                raw = await resp.read()
                answer = Answer("ok", resp.status, None, time.monotonic() - started)
                try:
                    answer.body = json.loads(raw) if raw else None
                except ValueError:
                    answer.body = raw[:200].decode("utf-8", "replace")
                if resp.status in (401, 403):
                    answer.outcome = "unauthorized"
                elif resp.status >= 400:
                    answer.outcome = "http_error"
                elif valid is not None and not valid(answer.body):
                    answer.outcome = "bad_body"
        except TimeoutError:
            answer = Answer("timeout", elapsed=time.monotonic() - started)
        except (aiohttp.ClientError, OSError) as exc:
            answer = Answer("connection_error", body=type(exc).__name__, elapsed=time.monotonic() - started)
        self.polls.labels(endpoint, answer.outcome).inc()
        self.last[endpoint] = answer
        if answer.outcome != "ok":
            self._warn_once(endpoint, answer)
        else:
            self._warned = {w for w in self._warned if w[0] != endpoint}
        return answer

    def _warn_once(self, endpoint: str, answer: Answer) -> None:
        key = (endpoint, answer.outcome)
        if key in self._warned:
            return
        self._warned.add(key)
        hint = " (check litellm.api_key)" if answer.outcome == "unauthorized" else ""
        log.warning("proxy %s poll: %s%s%s", endpoint, answer.outcome,
                    f" HTTP {answer.status}" if answer.status else "", hint)

    # -- polls -------------------------------------------------------------------------
    async def poll_proxy(self) -> list[Event]:
        """Readiness and liveliness, concurrently: one PROXY_STATE event each."""
        t = self.settings.request_timeout
        ready, alive = await asyncio.gather(
            self._get("readiness", "/health/readiness", t, valid=lambda b: isinstance(b, dict)),
            self._get("liveliness", "/health/liveliness", t),
        )
        events = [self._proxy_state("readiness", ready), self._proxy_state("liveliness", alive)]
        self.publish(events)
        return events

    def _proxy_state(self, endpoint: str, answer: Answer) -> Event:
        up = answer.outcome == "ok"
        if up and endpoint == "readiness" and isinstance(answer.body, dict):
            status = answer.body.get("status")
            up = status is None or str(status).lower() in READY_STATUSES
        previous = self.up.get(endpoint)
        if previous is not up:
            if not up:
                log.warning("proxy %s: down (%s%s)", endpoint, answer.outcome,
                            f" HTTP {answer.status}" if answer.status else "")
            elif previous is not None:
                log.info("proxy %s: up again", endpoint)
            self.up[endpoint] = up
        now = self.clock()
        if self.started_at is None:
            self.started_at = now
        if up:
            self.last_up[endpoint] = now
        event = Event(kind=Kind.PROXY_STATE, time=now, source="health", value=1.0 if up else 0.0,
                      status="success" if up else "failure",
                      status_code=str(answer.status) if answer.status else "",
                      error_class="" if up else answer.outcome)
        starting = not self.last_up and now - self.started_at < self.settings.start_grace
        since = self.last_up.get(endpoint, self.started_at)
        event.attrs = {"endpoint": endpoint, "outcome": answer.outcome, "latency": round(answer.elapsed, 4),
                       "task": self.task or "unknown", "starting": "true" if starting else "false",
                       "down_for": 0.0 if up else round(now - since, 3),
                       "seen_up": "true" if endpoint in self.last_up else "false"}
        if isinstance(answer.body, dict) and endpoint == "readiness":
            for key in ("status", "db", "cache", "litellm_version"):
                if key in answer.body:
                    event.attrs[key] = answer.body[key]
        return event

    async def poll_deployments(self) -> list[Event]:
        """`/health`: DEPLOYMENT_STATE 0 for each healthy deployment, 2 for each unhealthy one."""
        answer = await self._get("health", "/health", self.settings.deployment_health_timeout, valid=_health_body)
        if answer.outcome != "ok":
            return []
        body = answer.body
        now = self.clock()
        events = [self._deployment_state(e, healthy=True, now=now) for e in body.get("healthy_endpoints") or []
                  if isinstance(e, dict)]
        events += [self._deployment_state(e, healthy=False, now=now) for e in body.get("unhealthy_endpoints") or []
                   if isinstance(e, dict)]
        self.publish(events)
        return events

    def _deployment_state(self, entry: dict[str, Any], healthy: bool, now: float) -> Event:
        provider = str(entry.get("custom_llm_provider") or "")
        model, provider = split_provider(str(entry.get("model") or ""), provider)
        deployment = str(entry.get("model_id") or "")
        api_base = str(entry.get("api_base") or "")
        event = Event(kind=Kind.DEPLOYMENT_STATE, time=now, source="health", deployment=deployment, model=model,
                      api_provider=provider, api_base=api_base, value=0.0 if healthy else 2.0,
                      status="success" if healthy else "failure")
        dep = self.catalog.lookup(deployment, api_base, model) if self.catalog is not None else None
        if dep is not None:
            event.deployment = event.deployment or dep.id
            event.model_group = event.requested_model = dep.model_group
            event.api_provider = event.api_provider or dep.provider
        if not healthy:
            error = str(entry.get("error") or "")
            event.error_class = error_class_of(error)
            event.error_message = error.split("\nstack trace:", 1)[0][:500]
            status = entry.get("exception_status")
            event.status_code = str(status) if status is not None else ""
            event.rate_limited = event.status_code == "429"
        return event

    async def poll_model_info(self) -> int:
        """Merge `/model/info` into the catalog; returns the number of deployments it named."""
        answer = await self._get("model_info", "/model/info", self.settings.request_timeout,
                                 valid=lambda b: isinstance(b, dict) and isinstance(b.get("data"), list))
        if answer.outcome != "ok" or self.catalog is None:
            if self.on_catalog is not None:
                self.on_catalog("error")
            return 0
        deployments = catalog_from_model_info(answer.body)
        if not deployments:
            if self.on_catalog is not None:
                self.on_catalog("error")
            return 0
        self.catalog.merge(deployments)
        if self.enricher is not None:
            self.enricher.invalidate()
        if self.on_catalog is not None:
            self.on_catalog("ok")
        return len(deployments)
