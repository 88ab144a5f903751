"""The health / model-info poller against a local server serving the captured answers,
which then fails, hangs, refuses the key, answers garbage, goes away and recovers."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from agent.enrich import Catalog, Enricher
from agent.events import Kind
from agent.sources.health import HealthPoller, PollSettings
from tests.conftest import FIXTURES, free_port
from tests.promtext import total
from tests.tail_support import async_wait_until

KEY = "sk-test-master-key-123456"
CAPTURES = {
    "/health/readiness": "health_health_readiness_no_key.json",
    "/health/liveliness": "health_health_liveliness_no_key.json",
    "/health": "health_health_with_key.json",
    "/model/info": "health_model_info_with_key.json",
}
NEEDS_KEY = ("/health", "/model/info")


def capture(path: str) -> dict:
    return json.loads((FIXTURES / CAPTURES[path]).read_text())


class FakeProxy:
    """Serves the captured answers; `mode` switches it to failing, hanging or garbage."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.hits: list[str] = []
        app = web.Application()
        for path in CAPTURES:
            app.router.add_get(path, self.handle)
        self.server = TestServer(app, host="127.0.0.1", port=free_port())

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        if self.mode == "hang":
            await asyncio.sleep(30)
        if self.mode == "fail":
            return web.Response(status=500, text="Internal Server Error")
        if self.mode == "garbage":
            return web.Response(status=200, text="<html>upstream proxy error</html>")
        if request.path in NEEDS_KEY and request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"error": {"message": "Authentication Error"}}, status=401)
        answer = capture(request.path)
        return web.Response(status=answer["status"], body=json.dumps(answer["body"]),
                            content_type="application/json")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
async def proxy():
    fake = FakeProxy()
    await fake.server.start_server()
    yield fake
    await fake.server.close()


def make_poller(url: str, events: list, key: str | None = KEY, catalog: Catalog | None = None, **kw):
    settings = PollSettings(base_url=url, api_key=key, health_interval=kw.pop("health_interval", 0.05),
                            deployment_health_interval=kw.pop("deployment_health_interval", None),
                            model_info_interval=kw.pop("model_info_interval", None),
                            request_timeout=kw.pop("request_timeout", 2.0),
                            deployment_health_timeout=kw.pop("deployment_health_timeout", 2.0))
    registry = CollectorRegistry()
    catalog = catalog if catalog is not None else Catalog()
    poller = HealthPoller(settings, events.extend, registry, catalog=catalog, enricher=Enricher(catalog))
    return poller, registry, catalog


async def test_captured_answers_give_proxy_state_deployment_states_and_catalog(proxy):
    events: list = []
    poller, registry, catalog = make_poller(proxy.url, events)
    await poller.open()
    try:
        assert await poller.poll_model_info() == len(capture("/model/info")["body"]["data"])
        states = await poller.poll_deployments()
        proxy_states = await poller.poll_proxy()
    finally:
        await poller.stop(time.monotonic() + 30)

    assert {e.attrs["endpoint"]: e.value for e in proxy_states} == {"readiness": 1.0, "liveliness": 1.0}
    assert proxy_states[0].attrs["db"] == capture("/health/readiness")["body"]["db"]

    body = capture("/health")["body"]
    expected = {e["model_id"]: 0.0 for e in body["healthy_endpoints"]}
    expected.update({e["model_id"]: 2.0 for e in body["unhealthy_endpoints"]})
    assert {e.deployment: e.value for e in states} == expected
    assert len(states) == body["healthy_count"] + body["unhealthy_count"]
    groups = {e["model_info"]["id"]: e["model_name"] for e in capture("/model/info")["body"]["data"]}
    for event in states:
        assert event.kind == Kind.DEPLOYMENT_STATE and event.source == "health"
        assert event.model_group == groups[event.deployment]
    for entry in body["unhealthy_endpoints"]:
        event = next(e for e in states if e.deployment == entry["model_id"])
        assert event.status_code == str(entry["exception_status"])
        assert event.error_class and event.error_class in entry["error"]
        assert "stack trace" not in event.error_message
    bedrock = next(e for e in states if e.deployment == "bedrock-acct444-euc1")
    assert (bedrock.api_provider, bedrock.model) == ("bedrock", "converse/anthropic.claude-3-haiku-20240307-v1:0")

    # the catalog now knows account and region of every deployment from its tags
    for entry in capture("/model/info")["body"]["data"]:
        tags = dict(t.split(":", 1) for t in entry["litellm_params"].get("tags") or [])
        if "aws_account" in tags:
            assert catalog.get(entry["model_info"]["id"]).aws_account == tags["aws_account"]
    text = generate_latest(registry).decode()
    for endpoint in ("readiness", "liveliness", "health", "model_info"):
        assert total(text, "gatewatch_health_poll_total", endpoint=endpoint, outcome="ok") == 1


async def test_fails_hangs_goes_away_and_recovers(proxy):
    events: list = []
    # a timeout long enough that only the hanging mode times out, even on a busy machine
    poller, registry, _ = make_poller(proxy.url, events, request_timeout=1.5)

    def latest(endpoint: str):
        found = [e for e in events if e.kind == Kind.PROXY_STATE and e.attrs["endpoint"] == endpoint]
        return found[-1] if found else None

    def polls(outcome: str) -> float:
        return total(generate_latest(registry).decode(), "gatewatch_health_poll_total", endpoint="readiness",
                     outcome=outcome)

    def down_by(endpoint: str, error_class: str) -> bool:
        event = latest(endpoint)
        return event is not None and event.value == 0.0 and event.error_class == error_class

    within = 60  # ceilings, not durations: each wait ends as soon as its state is seen
    await poller.start()
    try:
        await async_wait_until(lambda: latest("readiness") is not None and latest("readiness").value == 1.0,
                               within=within)
        proxy.mode = "fail"
        await async_wait_until(lambda: down_by("readiness", "http_error") and down_by("liveliness", "http_error"),
                               within=within)
        assert latest("readiness").status_code == "500"
        proxy.mode = "hang"
        await async_wait_until(lambda: polls("timeout") >= 1 and down_by("readiness", "timeout"), within=within)
        proxy.mode = "garbage"
        await async_wait_until(lambda: polls("bad_body") >= 1, within=within)
        proxy.mode = "ok"
        await async_wait_until(lambda: latest("readiness").value == 1.0, within=within)
        await proxy.server.close()  # the proxy is gone: connection refused
        # a poll already in flight when the server closed may still answer ok: wait for the state
        await async_wait_until(lambda: polls("connection_error") >= 1 and latest("readiness").value == 0.0,
                               within=within)
    finally:
        await poller.stop(time.monotonic() + 30)
    assert polls("ok") >= 2 and polls("http_error") >= 1


async def test_wrong_key_is_reported_not_fatal_and_never_logged(proxy, caplog):
    events: list = []
    poller, registry, catalog = make_poller(proxy.url, events, key="sk-wrong-key-abcdef")
    caplog.set_level(logging.DEBUG)
    await poller.open()
    try:
        assert await poller.poll_deployments() == []
        assert await poller.poll_deployments() == []
        assert await poller.poll_model_info() == 0
    finally:
        await poller.stop(time.monotonic() + 30)
    text = generate_latest(registry).decode()
    assert total(text, "gatewatch_health_poll_total", endpoint="health", outcome="unauthorized") == 2
    assert len(catalog) == 0
    warnings = [r.getMessage() for r in caplog.records if "health poll" in r.getMessage()]
    assert len(warnings) == 1 and "unauthorized" in warnings[0]  # once, not every poll
    assert "sk-wrong-key" not in caplog.text


async def test_app_wires_the_poller_into_metrics(proxy, gatewatch_server):
    import aiohttp

    _gw, base = await gatewatch_server({"litellm": {"base_url": proxy.url, "api_key": KEY, "health_interval": "100ms",
                                                   "deployment_health_interval": "200ms",
                                                   "model_info_interval": "10s"}})
    body = capture("/health")["body"]

    async with aiohttp.ClientSession() as session:
        async def metrics() -> str:
            async with session.get(base + "/metrics") as resp:
                return await resp.text()

        text = ""
        deadline = asyncio.get_running_loop().time() + 60  # a ceiling for a busy machine
        while True:
            text = await metrics()
            try:
                check_wired(text, body)
                break
            except AssertionError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
            await asyncio.sleep(0.05)


def check_wired(text: str, body: dict) -> None:
    """What the wired poller has published once its polls have run (every value, at once)."""
    assert total(text, "gatewatch_health_poll_total", endpoint="health", outcome="ok") >= 1
    assert total(text, "gatewatch_proxy_up", endpoint="readiness") == 1
    assert total(text, "gatewatch_proxy_up", endpoint="liveliness") == 1
    for entry in body["unhealthy_endpoints"]:
        assert total(text, "litellm_deployment_state", model_id=entry["model_id"]) == 2
    for entry in body["healthy_endpoints"]:
        assert total(text, "litellm_deployment_state", model_id=entry["model_id"]) == 0
    acct = next(e for e in capture("/model/info")["body"]["data"] if e["model_info"]["id"] == "gpt-lab-acct222-euw1")
    assert total(text, "litellm_deployment_state", model_id="gpt-lab-acct222-euw1",
                 aws_account=acct["model_info"]["account_id"], aws_region="eu-west-1") == 0
    assert total(text, "gatewatch_catalog_deployments") == len(capture("/model/info")["body"]["data"])
    assert total(text, "gatewatch_events_received_total", source="health") >= len(body["healthy_endpoints"])


def test_check_config_lines_name_files_and_never_the_key(tmp_path):
    from agent.config import parse_config
    from agent.sources.feature import check_lines

    (tmp_path / "proxy.log").touch()
    (tmp_path / "proxy.log.1").touch()
    config = parse_config({"litellm": {"base_url": "http://127.0.0.1:4000", "api_key": KEY,
                                       "logs": [str(tmp_path / "proxy.log*"), "-"]}})
    lines = check_lines(config)
    assert lines[0].startswith(f"logs: {tmp_path / 'proxy.log*'} -> 2 file(s)")
    assert lines[1] == "logs: standard input"
    assert "health poller: http://127.0.0.1:4000 every 15s, /health off" in lines[2]
    assert KEY not in "\n".join(lines)
