"""One lifecycle on every component (issue 17): `async start()`, `async stop(deadline)` and,
where a component can hand on what it holds on demand, `async flush(deadline) -> bool`.

The deadline is a `time.monotonic()` value: the app passes each component the end of
SIGTERM's budget, and a component whose deadline has already passed returns at once while
keeping what it could not send (the outbox keeps undelivered rows for the next start).
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import pytest

from agent.app import GatewatchApp
from agent.config import parse_config
from agent.state.redis import RedisState
from tests.conftest import FIXTURES, ROOT
from tests.notify_support import ReceiverProcess, ServiceStack, alert, until


def _config(tmp: Path, notify: bool) -> dict[str, Any]:
    """Every feature the app can install, against loopback addresses nothing listens on
    (the app is built, never started)."""
    config: dict[str, Any] = {
        "state_dir": str(tmp),
        "litellm": {"config": str(FIXTURES / "config.yaml"), "base_url": "http://127.0.0.1:9",
                    "logs": [str(tmp / "proxy.log")]},
        "attribution": {"ecs_metadata": False},
        "rules": [str(ROOT / "rules")],
        "otel": {"enabled": True, "endpoint": "http://127.0.0.1:9", "protocol": "http/protobuf"},
        "cloudwatch": {"enabled": True, "mode": "emf", "emf_output": str(tmp / "emf.log")},
        "quotas": {"enabled": True},
    }
    if notify:
        config["notify"] = {"receivers": [{"name": "r", "webhook": {"url": "http://127.0.0.1:9/hook"}}],
                            "route": {"receiver": "r"}}
    return config


def _components(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    found: list[Any] = []
    for notify in (True, False):  # without notify the console loads silences itself
        gw = GatewatchApp(parse_config(_config(tmp / f"notify-{notify}", notify)))
        found += [gw.state, *gw.pipeline.sinks, *gw.components]
    found.append(RedisState(parse_config({"state": {"url": "redis://127.0.0.1:9"}}).state))
    return found


def _check_lifecycle(component: Any) -> None:
    what = type(component).__qualname__
    assert inspect.iscoroutinefunction(component.start), f"{what}.start is not async"
    assert inspect.iscoroutinefunction(component.stop), f"{what}.stop is not async"
    start = inspect.signature(component.start)
    assert list(start.parameters) == [], f"{what}.start{start}"
    stop = inspect.signature(component.stop)
    assert list(stop.parameters) == ["deadline"], f"{what}.stop{stop}"
    assert stop.parameters["deadline"].annotation == "float", f"{what}.stop{stop}"
    assert stop.parameters["deadline"].default is inspect.Parameter.empty, f"{what}: the deadline is required"
    flush = getattr(component, "flush", None)
    if flush is not None:
        assert inspect.iscoroutinefunction(flush), f"{what}.flush is not async"
        signature = inspect.signature(flush)
        assert list(signature.parameters) == ["deadline"], f"{what}.flush{signature}"
        assert signature.return_annotation == "bool", f"{what}.flush{signature}"


def test_every_component_the_app_starts_has_the_one_lifecycle(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    components = _components(tmp_path, monkeypatch)
    names = {type(c).__name__ for c in components}
    # all features on: every kind of component is walked
    assert {"LocalState", "RedisState", "PrometheusSink", "CloudWatchSink", "OtelSink", "RuleSink", "RuleEngine",
            "NotifyService", "TailSource", "HealthPoller", "QuotaService", "UsageRecorder", "Refresher",
            "DeploymentStats", "SilenceLoader"} <= names
    for component in components:
        _check_lifecycle(component)
    flushable = {type(c).__name__ for c in components if hasattr(c, "flush")}
    assert {"CloudWatchSink", "RedisState"} <= flushable


@pytest.fixture(scope="module")
def receiver() -> Any:
    process = ReceiverProcess()
    yield process
    process.close()


@pytest.mark.integration
async def test_notify_stop_with_a_past_deadline_returns_at_once_and_keeps_the_outbox(
        receiver: ReceiverProcess, tmp_path: Path) -> None:
    """SIGTERM's budget already spent while a receiver hangs: stop returns without waiting for the
    send, and the notification stays in the outbox, sent (with the same id) by the next start."""
    await receiver.reset()
    await receiver.control(mode="hang", hang_seconds=30, count=1)
    notify = {"receivers": [{"name": "oncall", "webhook": {"url": receiver.url("/am")}}],
              "route": {"receiver": "oncall", "group_by": ["..."], "group_wait": "0s", "group_interval": "1h"},
              "outbox": {"initial_backoff": "50ms", "max_backoff": "200ms", "send_timeout": "20s"}}
    stack = ServiceStack(tmp_path, notify)
    await stack.__aenter__()
    try:
        stack.service.receive([alert(deployment="gpt-lab-acct111-use1")])
        await until(receiver.received, limit=30, what="the send in flight")
        started = time.monotonic()
        await stack.service.stop(time.monotonic() - 1.0)
        elapsed = time.monotonic() - started
    finally:
        await stack.__aexit__(None, None, None)
    assert elapsed < 5.0  # the send timeout is 20 s, the hang 30 s: stop did not wait for either
    [hung] = await receiver.received()
    assert hung["answered"] == "hang"

    async with ServiceStack(tmp_path, notify) as again:
        await until(receiver.accepted, limit=30, what="the kept notification sent by the next start")
        [sent] = await receiver.accepted()
        assert sent["headers"]["X-Gatewatch-Notification-Id"] == hung["headers"]["X-Gatewatch-Notification-Id"]
        await until(lambda: again.metric("gatewatch_outbox_depth") == 0, what="outbox drained")
