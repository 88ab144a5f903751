"""ProxyDown as on-call needs it (issue 18): a proxy that is still starting is not down; a page
names the task and how long the proxy has not answered.

The health poller (real HTTP against a local fake proxy) feeds the shipped rule pack, with a
clock the test drives: polls every 15 s and evaluations every 15 s, as in production.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from agent.enrich import Catalog
from agent.rules.config import RuleEngineConfig
from agent.rules.engine import RuleEngine
from agent.rules.loader import load_rule_set
from agent.rules.testing import MemoryState
from agent.sources.health import HealthPoller, PollSettings
from tests.test_health_poller import proxy  # noqa: F401  (the fake proxy fixture)

T0 = 1_800_000_000.0
STEP = 15.0


class Harness:
    def __init__(self, url: str, grace: float = 300.0) -> None:
        self.now = T0
        self.events: list = []
        settings = PollSettings(base_url=url, health_interval=STEP, model_info_interval=None, request_timeout=2.0,
                                start_grace=grace)
        self.poller = HealthPoller(settings, self.events.extend, CollectorRegistry(), clock=lambda: self.now)
        self.poller.task = "arn:aws:ecs:us-east-1:111111111111:task/lab/0123"
        self.poller.started_at = T0
        self.engine = RuleEngine(RuleEngineConfig(persist_alerts=False), None, MemoryState(), Catalog(),
                                 clock=lambda: self.now, run_loops=False)
        self.engine.apply(load_rule_set(None), T0)
        self.pages: list[tuple[float, str, dict, dict]] = []  # (time, state, labels, annotations)

    async def run_until(self, until: float) -> None:
        """Poll and evaluate every STEP seconds up to `until` (seconds after T0)."""
        while self.now <= T0 + until:
            self.events.clear()
            await self.poller.poll_proxy()
            self.engine.handle(list(self.events))
            for alert in await self.engine.evaluate_group("deployments", self.now):
                if alert.name == "ProxyDown":
                    self.pages.append((self.now - T0, alert.state, dict(alert.labels), dict(alert.annotations)))
            self.now += STEP

    def pending(self) -> list:
        return [a for r, a in self.engine.active_alerts() if r.rule.alert == "ProxyDown"]


async def test_sidecar_up_90s_before_the_proxy_never_pages(proxy):  # noqa: F811
    h = Harness(proxy.url)
    await h.poller.open()
    try:
        proxy.mode = "fail"
        await h.run_until(90)
        assert h.pending() == [], "a starting proxy is not down"
        proxy.mode = "ok"
        await h.run_until(600)
    finally:
        await h.poller.stop(time.monotonic() + 30)
    assert h.pages == []


async def test_a_20s_restart_does_not_page(proxy):  # noqa: F811
    h = Harness(proxy.url)
    await h.poller.open()
    try:
        await h.run_until(60)
        proxy.mode = "fail"
        await h.run_until(80)
        proxy.mode = "ok"
        await h.run_until(400)
    finally:
        await h.poller.stop(time.monotonic() + 30)
    assert h.pages == []


async def test_a_proxy_that_never_comes_up_pages_after_the_grace_naming_the_task(proxy):  # noqa: F811
    h = Harness(proxy.url, grace=300.0)
    await h.poller.open()
    try:
        proxy.mode = "fail"
        await h.run_until(600)
    finally:
        await h.poller.stop(time.monotonic() + 30)
    firing = [p for p in h.pages if p[1] == "firing"]
    assert firing, "the proxy never came up: that must page"
    first = min(p[0] for p in firing)
    assert 300 + 60 <= first <= 300 + 60 + 2 * STEP, first  # the grace, then `for: 1m`
    _, _, labels, annotations = firing[0]
    assert labels["task"] == "arn:aws:ecs:us-east-1:111111111111:task/lab/0123"
    assert labels["endpoint"] in ("readiness", "liveliness")
    # never seen up: counted since the sidecar started
    assert f"task {labels['task']}" in annotations["summary"]
    assert "for 6m" in annotations["summary"], annotations["summary"]


async def test_a_proxy_gone_for_good_pages_with_the_time_since_it_was_last_up(proxy):  # noqa: F811
    h = Harness(proxy.url)
    await h.poller.open()
    try:
        await h.run_until(120)  # up, polled at 0..120 s
        proxy.mode = "fail"
        await h.run_until(300)
    finally:
        await h.poller.stop(time.monotonic() + 30)
    firing = [p for p in h.pages if p[1] == "firing"]
    assert firing
    first = min(p[0] for p in firing)
    assert 135 + 60 <= first <= 135 + 60 + 2 * STEP, first
    at, _, _, annotations = firing[0]
    down_for = at - 120  # last answered OK at 120 s
    minutes, seconds = divmod(int(down_for), 60)
    assert f"for {minutes}m {seconds}s" in annotations["summary"], (annotations["summary"], down_for)


async def test_the_task_is_the_ecs_task_arn_from_the_metadata_endpoint(monkeypatch):
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from agent.enrich import task_identity
    from tests.conftest import free_port

    arn = "arn:aws:ecs:eu-west-1:222222222222:task/prod/9f1c"
    async def task(request: web.Request) -> web.Response:
        return web.json_response({"TaskARN": arn, "Family": "litellm"})

    app = web.Application()
    app.router.add_get("/v4/abc/task", task)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", f"http://127.0.0.1:{server.port}/v4/abc")
        assert await task_identity() == arn
    finally:
        await server.close()
    monkeypatch.delenv("ECS_CONTAINER_METADATA_URI_V4")
    import socket

    assert await task_identity() == socket.gethostname()
