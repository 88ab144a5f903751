"""Builds the pipeline from config and owns start/stop order and graceful shutdown.

Start: catalog -> sinks -> components (sources, evaluators, senders) -> ready.
Stop (SIGTERM): refuse new ingest -> stop sources -> flush held requests -> stop
components and sinks in reverse order (each flushes: spans, CloudWatch, outbox,
checkpoints) -> exit, all inside `server.shutdown_grace`.

One lifecycle on every component (agent/host.py): `async start()`, `async stop(deadline)`
with `deadline` a `time.monotonic()` value (the end of the grace), and `async flush(deadline)
-> bool` where a component can hand on what it holds on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from agent import __version__
from agent.alert import AlertReceiver
from agent.alerts.logreceiver import LogReceiver
from agent.config import Config, read_text
from agent.configtypes import ConfigError
from agent.enrich import Catalog, Enricher, Fallback, catalog_from_config_text, ecs_task_metadata, parse_task_arn
from agent.exposition import generate_latest
from agent.host import Component, ConfigCheck, ReloadHook  # prometheus_client's format, faster at 20k series
from agent.labelcap import LabelCap
from agent.pipeline import Pipeline, RequestTracker, Sink
from agent.redact import register_config_secrets
from agent.selfmetrics import SelfMetrics
from agent.sinks.prometheus import PrometheusSink
from agent.sources.bodies import BodyReader
from agent.sources.callbacks import ALERTS_ROUTE, EVENTS_ROUTE, IngestRoutes, bearer_auth_middleware
from agent.sqlitedb import StorageCollector
from agent.state.base import StateBackend
from agent.state.factory import create_state

if TYPE_CHECKING:
    from agent.alerts.alertstore import AlertStore
    from agent.alerts.service import NotifyService
    from agent.quotas.service import QuotaService
    from agent.rules.engine import RuleEngine
    from agent.sinks.cloudwatch import CloudWatchSink
    from agent.sources.health import HealthPoller
    from agent.sources.tail.source import TailSource

log = logging.getLogger(__name__)





class GatewatchApp:
    def __init__(self, config: Config) -> None:
        self.config = config
        register_config_secrets(config)
        self.registry = CollectorRegistry(auto_describe=True)
        if config.prometheus.process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.metrics = SelfMetrics(self.registry)
        self.catalog = Catalog(fallback=Fallback(config.attribution.aws_account or "",
                                                 config.attribution.aws_region or ""))
        self.enricher = Enricher(self.catalog, self.metrics.count_unattributed)
        self.tracker = RequestTracker(config.pipeline.request_merge_window, config.pipeline.max_pending_requests)
        self.pipeline = Pipeline(self.enricher, self.tracker)
        self.pipeline.label_cap = LabelCap(config.labels.max_value_length,
                                           lambda name: self.metrics.labels_truncated.labels(name).inc()).apply
        # read at scrape time: a scrape right after an ingest already sees the held failures
        self.metrics.pending_requests.set_function(lambda: len(self.tracker))
        self.pipeline.on_sink_error = lambda name, n: self.metrics.sink_errors.labels(name).inc(n)
        self.pipeline.on_sink_handled = lambda name, n: self.metrics.sink_events.labels(name).inc(n)
        self.prometheus: PrometheusSink | None = None
        if config.prometheus.enabled:
            self.prometheus = PrometheusSink(
                self.registry,
                self.metrics,
                optional_labels=config.labels.optional,
                series_limit=config.labels.series_limit,
                include_health_checks=config.prometheus.include_health_checks,
                catalog=self.catalog,
            )
            self.pipeline.add_sink(self.prometheus)
        self.state: StateBackend = create_state(config, self.registry)  # Redis when state.url is set
        # ingest bodies: a read deadline and a cap on bodies read at once (slow clients)
        self.bodies = BodyReader(config.server.body_read_timeout, config.server.max_inflight_bodies)
        self.storage = StorageCollector(config.state_dir)  # SQLite files: errors, corrupt files recovered
        self.registry.register(self.storage)
        self.alert_receiver: AlertReceiver = LogReceiver()  # replaced by the notify router when configured
        self.components: list[Component] = []
        self.sources: list[Component] = []  # components that publish events: stopped before the flush
        self._started: list[Component] = []  # what start() started, in order; stop() stops only that
        self._stop_deadline: float | None = None  # time.monotonic() by which stop() must be done
        self.reload_hooks: list[ReloadHook] = []
        # set by the refresh feature: re-reads config, rules and catalog on SIGHUP and reports the outcome
        self.reload_handler: Callable[[], Awaitable[None]] | None = None
        self.readiness_checks: dict[str, Callable[[], tuple[bool, str]]] = {}
        self.route_setups: list[Callable[[web.Application], None]] = []
        # features' middlewares, run before the bearer check (the console's session cookie, CSRF)
        self.middlewares: list[Any] = []
        self.root_handler: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None  # the console
        # what `gatewatch check-config` prints beyond the catalog: one check per feature
        self.config_checks: list[ConfigCheck] = []
        # the slots a feature may fill (agent/features.py); None while that feature is off
        self.refresher: Component | None = None
        self.cloudwatch: CloudWatchSink | None = None
        self.notify: NotifyService | None = None
        self.alert_store: AlertStore | None = None
        self.rule_engine: RuleEngine | None = None
        self.log_tail: TailSource | None = None
        self.health_poller: HealthPoller | None = None
        self.quotas: QuotaService | None = None
        # set by serve(): what SIGHUP runs (the refresher when on, else a plain config reload)
        self.reload_requested: Callable[[], Awaitable[None]] | None = None
        self.accepting = False
        self.ready = False
        self.started_at = time.time()
        self._ticker: asyncio.Task[None] | None = None
        self._stopped = False
        self.inflight = 0  # HTTP requests being handled, so a graceful stop can let them finish
        self._idle = asyncio.Event()
        self._idle.set()
        self._build_features()

    # -- wiring ---------------------------------------------------------------------
    def _build_features(self) -> None:
        """Create the optional features the config turns on (each in its own module)."""
        from agent import features

        features.install(self)

    def add_sink(self, sink: Sink) -> None:
        self.pipeline.add_sink(sink)

    def add_component(self, component: Component) -> None:
        self.components.append(component)

    def add_source(self, source: Component) -> None:
        """A component that publishes into the pipeline: stopped first, before the flush."""
        self.sources.append(source)
        self.components.append(source)

    def add_config_check(self, check: ConfigCheck) -> None:
        self.config_checks.append(check)

    # -- catalog --------------------------------------------------------------------
    async def load_catalog(self) -> None:
        location = self.config.litellm.config
        if self.config.attribution.ecs_metadata and not (
            self.config.attribution.aws_account and self.config.attribution.aws_region
        ):
            task = await ecs_task_metadata()
            if task and isinstance(task.get("TaskARN"), str):
                ecs = parse_task_arn(task["TaskARN"])
                self.catalog.fallback = Fallback(
                    self.config.attribution.aws_account or ecs.aws_account,
                    self.config.attribution.aws_region or ecs.aws_region,
                )
                log.info("attribution fallback from ECS task metadata: account %s region %s",
                         self.catalog.fallback.aws_account, self.catalog.fallback.aws_region)
        if not location:
            return
        loop = asyncio.get_running_loop()
        source = "s3" if location.startswith("s3://") else "file"
        try:
            text = await loop.run_in_executor(None, read_text, location)
            loaded = catalog_from_config_text(text, self.catalog.fallback, location)
        except ConfigError:
            self.metrics.catalog_reloads.labels(source, "error").inc()
            raise
        self.catalog.replace(loaded)
        self.enricher.invalidate()
        self.metrics.catalog_deployments.set(len(self.catalog))
        self.metrics.catalog_reloads.labels(source, "ok").inc()
        unattributed = [d.id for d in self.catalog if not (d.aws_account and d.aws_region)]
        log.info("deployment catalog: %d deployments from %s", len(self.catalog), location)
        if unattributed:
            log.warning("deployments without account/region in the catalog (fallback used): %s",
                        ", ".join(unattributed))

    # -- HTTP -----------------------------------------------------------------------
    def web_app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.server.max_body_bytes,
            middlewares=[self._count_inflight, *self.middlewares,
                         bearer_auth_middleware(self.config.server.auth_token, self.protected_prefixes())],
        )
        IngestRoutes(self.pipeline, self.metrics, lambda: self.accepting, self.capture_content,
                     self.bodies).add_to(app)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/healthz", self.handle_healthz)
        app.router.add_get("/readyz", self.handle_readyz)
        app.router.add_get("/", self.root_handler or self.handle_index)
        app.router.add_get("/api", self.handle_index)  # the route list, also when `/` is the console
        for setup in self.route_setups:
            setup(app)
        app.on_startup.append(self._on_startup)
        # on_cleanup, not on_shutdown: aiohttp runs on_shutdown *before* it waits for in-flight
        # requests, so an ingest POST still reading its body would publish into stopped sinks.
        app.on_cleanup.append(self._on_shutdown)
        app[APP_KEY] = self
        return app

    @web.middleware
    async def _count_inflight(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.inflight += 1
        self._idle.clear()
        try:
            return await handler(request)
        finally:
            self.inflight -= 1
            if self.inflight == 0:
                self._idle.set()

    async def drain(self, within: float) -> bool:
        """Wait for requests in progress (an ingest POST still receiving its body) to finish.

        aiohttp's own shutdown stops reading request bodies, so a batch half received at
        SIGTERM would be lost unanswered; serve() drains before handing over to it.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._idle.wait()
        return self.inflight == 0

    def protected_prefixes(self) -> tuple[str, ...]:
        # ingest and the mutating APIs; /metrics, /healthz, /readyz stay open for probes
        return (EVENTS_ROUTE, ALERTS_ROUTE, "/api/", "/-/")

    def capture_content(self) -> bool:
        return bool(getattr(getattr(self.config, "otel", None), "capture_content", False))

    async def handle_metrics(self, request: web.Request) -> web.Response:
        # render off the event loop: at 20k series this takes tens of ms
        loop = asyncio.get_running_loop()
        if "gzip" in request.headers.get("Accept-Encoding", ""):  # Prometheus asks for it: 6 MB -> ~0.5 MB
            body = await loop.run_in_executor(None, _gzipped_metrics, self.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Content-Encoding": "gzip",
                                                    "Vary": "Accept-Encoding"})
        body = await loop.run_in_executor(None, generate_latest, self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Vary": "Accept-Encoding"})

    async def handle_healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": __version__})

    async def handle_readyz(self, request: web.Request) -> web.Response:
        checks: dict[str, Any] = {"pipeline": {"ok": self.ready, "detail": "started" if self.ready else "starting"}}
        ok = self.ready
        for name, check in self.readiness_checks.items():
            try:
                passed, detail = check()
            except Exception as exc:  # a check must not break the probe
                passed, detail = False, f"check failed: {type(exc).__name__}"
            checks[name] = {"ok": passed, "detail": detail}
            ok = ok and passed
        return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)

    async def handle_index(self, request: web.Request) -> web.Response:
        return web.json_response({"service": "gatewatch", "version": __version__,
                                  "routes": sorted({r.resource.canonical for r in request.app.router.routes()
                                                    if r.resource is not None})})

    # -- lifecycle ------------------------------------------------------------------
    async def _on_startup(self, app: web.Application) -> None:
        await self.start()

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.stop(self._stop_deadline)

    async def start(self) -> None:
        await self.state.start()
        self._started.append(self.state)
        self.readiness_checks.setdefault("state", self.state.healthy)
        self.readiness_checks.setdefault("storage", self.storage.readiness)
        await self.load_catalog()
        for sink in self.pipeline.sinks:
            await sink.start()
            self._started.append(sink)
        for component in self.components:
            await component.start()
            self._started.append(component)
        self._ticker = asyncio.create_task(self._tick_loop(), name="gatewatch-ticker")
        self.accepting = True
        self.ready = True
        self.metrics.ready.set(1)
        log.info("gatewatch %s ready: %d sinks, %d components", __version__, len(self.pipeline.sinks),
                 len(self.components))

    async def _tick_loop(self) -> None:
        counted = 0  # of tracker.recovered, which only grows: the counter follows it by its increase
        while True:
            await asyncio.sleep(1.0)
            try:
                self.pipeline.tick()
                recovered = self.tracker.recovered
                if recovered > counted:
                    self.metrics.recovered_requests.inc(recovered - counted)
                    counted = recovered
            except Exception:
                log.exception("pipeline tick failed")

    async def stop(self, deadline: float | None = None) -> None:
        """Stop what start() started, in reverse, sources first and then a pipeline flush;
        by `deadline` (time.monotonic(); `server.shutdown_grace` from now when not given):
        each component gets the deadline, one still stopping then is cut off, and the rest
        still get their turn."""
        if self._stopped:
            return
        if deadline is None:
            deadline = time.monotonic() + float(self.config.server.shutdown_grace)
        self._stopped = True
        self.accepting = False
        self.ready = False
        self.metrics.ready.set(0)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        # sources first (they may still publish), then flush, then everyone else
        started = list(reversed(self._started))
        self._started.clear()
        sources = [c for c in started if any(c is s for s in self.sources)]
        for component in sources:
            await self._stop_one(component, deadline)
        self.pipeline.flush()
        for component in started:
            if not any(component is s for s in sources):
                await self._stop_one(component, deadline)
        log.info("gatewatch stopped")

    async def _stop_one(self, component: Any, deadline: float) -> None:
        name = getattr(component, "name", component)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await component.stop(deadline)
        except TimeoutError:
            log.error("stopping %s did not finish within the shutdown grace; cut off", name)
        except Exception:
            log.exception("stopping %s failed", name)

    async def reload(self, new_config: Config) -> None:
        """Apply a new config (SIGHUP, POST /-/reload): each feature takes what it can."""
        self.config = new_config
        for hook in self.reload_hooks:
            await hook(new_config)


APP_KEY = web.AppKey("gatewatch", GatewatchApp)


def _gzipped_metrics(registry: CollectorRegistry) -> bytes:
    return gzip.compress(generate_latest(registry), compresslevel=5)


async def serve(config: Config, host: str | None = None, port: int | None = None,
                reload_config: Callable[[], Config] | None = None,
                started: Callable[[int], None] | None = None) -> None:
    """Run the sidecar until SIGTERM/SIGINT; graceful shutdown within the grace period."""
    gw = GatewatchApp(config)
    app = gw.web_app()
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=min(5.0, config.server.shutdown_grace))
    await runner.setup()
    site = web.TCPSite(runner, host or config.server.host, config.server.port if port is None else port)
    await site.start()
    addresses = runner.addresses  # (host, port, ...) of each listening socket
    bound = addresses[0][1] if addresses else port
    log.info("listening on %s:%s", host or config.server.host, bound)
    if started is not None:
        started(int(bound or 0))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def do_reload() -> None:
        if gw.reload_handler is not None:
            await gw.reload_handler()
            return
        if reload_config is None:
            return
        try:
            new = await loop.run_in_executor(None, reload_config)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return
        await gw.reload(new)
        log.info("config reloaded")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError, AttributeError):
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(do_reload()))
    gw.reload_requested = do_reload
    await stop.wait()
    log.info("shutting down (grace %.0fs)", config.server.shutdown_grace)
    gw.accepting = False  # new requests on open keep-alive connections get 503
    await site.stop()  # no new connections
    if not await gw.drain(min(5.0, config.server.shutdown_grace / 3)):
        log.warning("%d request(s) still in progress after the drain; they are cut off", gw.inflight)
    # the app's stop (run by runner.cleanup) shares the grace: each component gets what is left
    gw._stop_deadline = time.monotonic() + config.server.shutdown_grace
    try:
        await asyncio.wait_for(runner.cleanup(), timeout=config.server.shutdown_grace)
    except TimeoutError:
        log.error("shutdown did not finish within %.0fs", config.server.shutdown_grace)
